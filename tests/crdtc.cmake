# crdtc, the C client of crdt.v1 (gateway/client), against a real crdtd: included by
# tests/CMakeLists.txt when crdtd is built.
if(NOT TARGET crdtc)
  return()
endif()

# crdtc_ws_test(name [TIMEOUT s] [LIBS ...])
function(crdtc_ws_test name)
  cmake_parse_arguments(W "" "TIMEOUT" "LIBS" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${name}.c)
    return()
  endif()
  if(NOT W_TIMEOUT)
    set(W_TIMEOUT 120)
  endif()
  crdt_tap_test(${name} SOURCES ${name}.c http_client.c LIBS crdtc ${W_LIBS} TIMEOUT ${W_TIMEOUT})
  target_compile_definitions(${name} PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>"
                             CRDTC_BIN="$<$<TARGET_EXISTS:crdtc_cli>:$<TARGET_FILE:crdtc_cli>>")
  add_dependencies(${name} crdtd)
  if(TARGET crdtc_cli)
    add_dependencies(${name} crdtc_cli)
  endif()
endfunction()

crdtc_ws_test(test_ws_sync)
crdtc_ws_test(test_ws_auth LIBS crdtd_token)
crdtc_ws_test(test_ws_slow)
crdtc_ws_test(test_ws_many)
crdtc_ws_test(test_ws_cli LIBS crdtd_token)
crdtc_ws_test(test_crdtc_bin) # binary crdt.v1 through crdtc (config.binary)
# a turn's queued messages in one masked write: thousands of applies at once over ws:// (through a
# proxy checking every frame's mask) and wss://
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_crdtc_batch.c)
  find_package(Threads REQUIRED)
  crdtc_ws_test(test_crdtc_batch LIBS Threads::Threads)
  target_compile_definitions(test_crdtc_batch PRIVATE
                             TLS_CERTS_SH="${PROJECT_SOURCE_DIR}/scripts/tls-certs.sh")
endif()
