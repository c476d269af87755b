# vm/: address spaces and the userfaultfd pager (issue 5). Each test exits 77 (skipped, with the reason
# printed) when the kernel refuses userfaultfd.
faultsafe_test(vm_pager_test SOURCES vm_pager_test.cpp TIMEOUT 60 LABELS vm)
faultsafe_test(vm_aspace_test SOURCES vm_aspace_test.cpp TIMEOUT 60 LABELS vm)
faultsafe_test(vm_bounce_test SOURCES vm_bounce_test.cpp TIMEOUT 120 LABELS vm)
faultsafe_test(vm_process_test SOURCES vm_process_test.cpp TIMEOUT 90 LABELS vm)
faultsafe_test(vm_waitgraph_test SOURCES vm_waitgraph_test.cpp TIMEOUT 60 LABELS vm)
faultsafe_test(vm_split_test SOURCES vm_split_test.cpp TIMEOUT 120 LABELS vm)
# Faults racing munmap/mprotect/ftruncate. glibc's free perturbation (tcache off, freed memory
# overwritten) makes a use-after-free in a fault thread crash in the plain builds; the asan preset
# reports it.
faultsafe_test(vm_race_test SOURCES vm_race_test.cpp TIMEOUT 120 LABELS vm)
set_tests_properties(vm_race_test PROPERTIES ENVIRONMENT "GLIBC_TUNABLES=glibc.malloc.tcache_count=0;MALLOC_PERTURB_=165")
faultsafe_test(vm_fork_test SOURCES vm_fork_test.cpp TIMEOUT 90 LABELS vm)
faultsafe_test(vm_poison_test SOURCES vm_poison_test.cpp TIMEOUT 60 LABELS vm)
# "notsan": its forked servers start threads in the child of a multi-threaded parent, which ThreadSanitizer
# does not support (it kills the child: "starting new threads after multi-threaded fork"); ASan covers it.
faultsafe_test(vm_served_test SOURCES vm_served_test.cpp TIMEOUT 180 LABELS vm notsan)
# The pager's fault threads (model/README.md finding 1) and one pool serving many address spaces.
faultsafe_test(vm_pool_test SOURCES vm_pool_test.cpp TIMEOUT 120 LABELS vm)
# The client API against the kernel: one random sequence of file and mapping calls on a ramfs file and
# on a tmpfs file, compared call by call (FAULTSAFE_SEED=<n> replays one seed).
faultsafe_test(vm_differential_test SOURCES vm_differential_test.cpp TIMEOUT 120 LABELS vm)
