# Channel and resource-manager tests (issue 4).
faultsafe_test(channel_basic SOURCES channel_basic.cpp TIMEOUT 90 LABELS ipc)
faultsafe_test(resmgr_basic SOURCES resmgr_basic.cpp TIMEOUT 90 LABELS resmgr)
