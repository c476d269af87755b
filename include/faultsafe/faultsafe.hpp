// faultsafe/faultsafe.hpp: the umbrella header; includes every public faultsafe header.
#pragma once

#include <faultsafe/config.hpp>
#include <faultsafe/source_location.hpp>
#include <faultsafe/thread_annotations.hpp>
#include <faultsafe/order/violation.hpp>
#include <faultsafe/activity/activity.hpp>
