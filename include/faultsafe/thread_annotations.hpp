// faultsafe/thread_annotations.hpp: Clang thread-safety analysis attributes.
//
// Every faultsafe lock is a FAULTSAFE_CAPABILITY and every guard FAULTSAFE_SCOPED_CAPABILITY, so code
// built with `clang++ -Wthread-safety` gets compile-time checks of FAULTSAFE_GUARDED_BY data and of
// FAULTSAFE_ACQUIRED_BEFORE/AFTER orders. Under other compilers the macros expand to nothing.
#pragma once

#if defined(__clang__) && !defined(SWIG)
#  define FAULTSAFE_THREAD_ANNOTATION(x) __attribute__((x))
#else
#  define FAULTSAFE_THREAD_ANNOTATION(x)
#endif

#define FAULTSAFE_CAPABILITY(x) FAULTSAFE_THREAD_ANNOTATION(capability(x))
#define FAULTSAFE_SCOPED_CAPABILITY FAULTSAFE_THREAD_ANNOTATION(scoped_lockable)
#define FAULTSAFE_GUARDED_BY(x) FAULTSAFE_THREAD_ANNOTATION(guarded_by(x))
#define FAULTSAFE_PT_GUARDED_BY(x) FAULTSAFE_THREAD_ANNOTATION(pt_guarded_by(x))
#define FAULTSAFE_ACQUIRED_BEFORE(...) FAULTSAFE_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define FAULTSAFE_ACQUIRED_AFTER(...) FAULTSAFE_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define FAULTSAFE_REQUIRES(...) FAULTSAFE_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define FAULTSAFE_REQUIRES_SHARED(...) FAULTSAFE_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define FAULTSAFE_ACQUIRE(...) FAULTSAFE_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define FAULTSAFE_ACQUIRE_SHARED(...) FAULTSAFE_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define FAULTSAFE_RELEASE(...) FAULTSAFE_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define FAULTSAFE_RELEASE_SHARED(...) FAULTSAFE_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define FAULTSAFE_RELEASE_GENERIC(...) FAULTSAFE_THREAD_ANNOTATION(release_generic_capability(__VA_ARGS__))
#define FAULTSAFE_TRY_ACQUIRE(...) FAULTSAFE_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define FAULTSAFE_TRY_ACQUIRE_SHARED(...) FAULTSAFE_THREAD_ANNOTATION(try_acquire_shared_capability(__VA_ARGS__))
#define FAULTSAFE_EXCLUDES(...) FAULTSAFE_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define FAULTSAFE_ASSERT_CAPABILITY(x) FAULTSAFE_THREAD_ANNOTATION(assert_capability(x))
#define FAULTSAFE_RETURN_CAPABILITY(x) FAULTSAFE_THREAD_ANNOTATION(lock_returned(x))
#define FAULTSAFE_NO_THREAD_SAFETY_ANALYSIS FAULTSAFE_THREAD_ANNOTATION(no_thread_safety_analysis)
