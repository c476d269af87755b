# Wait-for graph (activity/wait_graph.hpp): semantics on fake resources, real-thread cycles
# (ABBA, Colin's 5-hop, three servers), and a no-deadlock stress that must report nothing.
faultsafe_test(wait_graph_semantics SOURCES wait_graph_semantics.cpp TIMEOUT 30 LABELS wait_graph)
faultsafe_test(wait_graph_cycles SOURCES wait_graph_cycles.cpp TIMEOUT 60 LABELS wait_graph)
faultsafe_test(wait_graph_stress SOURCES wait_graph_stress.cpp TIMEOUT 90 LABELS wait_graph)
