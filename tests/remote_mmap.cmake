# mmap of a file of a server in another OS process, served by that server's pager (issue 11).
faultsafe_test(remote_mmap_test SOURCES remote_mmap_test.cpp TIMEOUT 120 LABELS resmgr vm)
