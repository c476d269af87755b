# The channel's spin-then-park hand-off (ipc/detail/hand_off.hpp) under a manual clock and a scripted
# word: every interleaving of one waiter and one waker, deterministically.
faultsafe_test(channel_hand_off SOURCES channel_hand_off_test.cpp TIMEOUT 30 LABELS ipc)
