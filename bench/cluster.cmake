# Steady replication benchmark (issue #6): one node's writes/s with and without two peers, and
# replication lag. Included by bench/CMakeLists.txt when crdtd is built.
find_package(Threads REQUIRED)
crdt_bench(bench_replication SOURCES bench_replication.c ${PROJECT_SOURCE_DIR}/tests/http_client.c
           LIBS Threads::Threads)
target_include_directories(bench_replication PRIVATE ${PROJECT_SOURCE_DIR}/tests)
target_compile_definitions(bench_replication PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
if(TARGET crdt_module) # --redis: a redis-server with crdt.so per node
  target_compile_definitions(bench_replication PRIVATE CRDT_MODULE_PATH="$<TARGET_FILE:crdt_module>")
  add_dependencies(bench_replication crdt_module)
endif()
add_dependencies(bench_replication crdtd)
# --tls: the same mesh over mutual TLS in each run, against the cleartext one
pkg_check_modules(BENCH_REPL_TLS IMPORTED_TARGET libssl libcrypto)
if(BENCH_REPL_TLS_FOUND)
  target_sources(bench_replication PRIVATE ${PROJECT_SOURCE_DIR}/tests/hc_tls.c)
  target_link_libraries(bench_replication PRIVATE PkgConfig::BENCH_REPL_TLS)
  target_compile_definitions(bench_replication PRIVATE BENCH_TLS=1
                             TLS_CERTS_SH="${PROJECT_SOURCE_DIR}/scripts/tls-certs.sh")
endif()
