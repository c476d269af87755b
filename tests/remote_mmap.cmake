# mmap of a file of a server in another OS process, served by that server's pager (issue 11).
# "notsan": its forked servers start threads in the child of a multi-threaded parent, which ThreadSanitizer
# does not support (it kills the child: "starting new threads after multi-threaded fork"); ASan covers it.
faultsafe_test(remote_mmap_test SOURCES remote_mmap_test.cpp TIMEOUT 120 LABELS resmgr vm notsan)
