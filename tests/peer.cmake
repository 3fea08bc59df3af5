# Peer links (issue #6): real crdtd processes on loopback ports linked with crdt-peer.v1.
# Included by tests/CMakeLists.txt when crdtd is built.
foreach(t test_peer_link)
  crdt_tap_test(${t} SOURCES ${t}.c http_client.c TIMEOUT 120)
  target_compile_definitions(${t} PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  add_dependencies(${t} crdtd)
endforeach()
