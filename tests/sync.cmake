# crdt.v1 WebSocket sessions (issue #5): the protocol against a real crdtd, with a raw WebSocket
# client of our own (tests/ws_raw.c) that can send what well-behaved clients never do.
if(TARGET crdtd AND TARGET crdtd_token)
  crdt_tap_test(test_ws_protocol SOURCES test_ws_protocol.c ws_raw.c http_client.c
                LIBS crdtd_token PkgConfig::JANSSON TIMEOUT 120)
  target_compile_definitions(test_ws_protocol PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  add_dependencies(test_ws_protocol crdtd)
endif()

# the crdt.v1 codec and the WebSocket message assembler and queue, without a server
if(TARGET crdt_v1)
  crdt_tap_test(test_crdt_v1 LIBS crdt_v1)
endif()
if(TARGET crdtd_wsmsg)
  crdt_tap_test(test_wsmsg LIBS crdtd_wsmsg)
endif()

# sessions over a store whose calls complete later (crdt_store_deferred_wrap in crdtd)
if(TARGET crdtd)
  crdt_tap_test(test_ws_defer SOURCES test_ws_defer.c ws_raw.c http_client.c
                LIBS PkgConfig::JANSSON TIMEOUT 120)
  target_compile_definitions(test_ws_defer PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  add_dependencies(test_ws_defer crdtd)
endif()

# the idle timeout: pings and pongs keep a session alive, a deaf one is closed, no hello is 4003
if(TARGET crdtd)
  crdt_tap_test(test_ws_idle SOURCES test_ws_idle.c ws_raw.c http_client.c TIMEOUT 60)
  target_compile_definitions(test_ws_idle PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  add_dependencies(test_ws_idle crdtd)
endif()

# binary crdt.v1 (crdt.v1.bin): the codec without a server, and sessions against a real crdtd
if(TARGET crdt_v1)
  crdt_tap_test(test_crdt_v1_bin LIBS crdt_v1)
endif()
if(TARGET crdtd AND TARGET crdt_v1)
  crdt_tap_test(test_ws_bin SOURCES test_ws_bin.c ws_raw.c http_client.c
                LIBS crdt_v1 PkgConfig::JANSSON TIMEOUT 120)
  target_compile_definitions(test_ws_bin PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  add_dependencies(test_ws_bin crdtd)
endif()
