# bench_ws: crdt.v1 sessions through the crdtc client against crdtd and a bare lws echo server
# (same binary, --echo), and fan-out to 1,000 subscribers. Included by bench/CMakeLists.txt.
if(NOT TARGET crdtc)
  return()
endif()
crdt_bench(bench_ws SOURCES bench_ws.c ${PROJECT_SOURCE_DIR}/tests/http_client.c LIBS crdtc m)
target_include_directories(bench_ws PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_compile_options(bench_ws PRIVATE -Wno-missing-field-initializers)
add_dependencies(bench_ws crdtd)
