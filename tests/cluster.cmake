# Replication tests (issue #6): the fault proxy, and clusters of real crdtd processes on loopback
# whose links pass through it. Included by tests/CMakeLists.txt when crdtd is built.
find_package(Threads REQUIRED)

# the proxy as a library for test programs, and as a small standalone tool (commands on stdin)
add_library(crdt_faultproxy STATIC faultproxy.c)
target_link_libraries(crdt_faultproxy PUBLIC Threads::Threads PRIVATE crdtd_warnings)
target_include_directories(crdt_faultproxy PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
add_executable(faultproxy faultproxy.c)
target_compile_definitions(faultproxy PRIVATE FP_STANDALONE)
target_link_libraries(faultproxy PRIVATE Threads::Threads crdtd_warnings)

crdt_tap_test(test_faultproxy LIBS crdt_faultproxy TIMEOUT 60)

foreach(t test_cluster test_cluster_faults)
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${t}.c)
    continue()
  endif()
  crdt_tap_test(${t} SOURCES ${t}.c cluster_helper.c http_client.c
                LIBS crdt_faultproxy PkgConfig::JANSSON TIMEOUT 180)
  target_compile_definitions(${t} PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  add_dependencies(${t} crdtd)
endforeach()

# the fault tests again with the three nodes replicating over mutual TLS (wss://, --peer-cert,
# --peer-ca, --peer-require-tls; certificates made by the test with scripts/tls-certs.sh), and a
# peer certificate replaced under SIGHUP
pkg_check_modules(CL_TLS IMPORTED_TARGET libssl libcrypto)
if(CL_TLS_FOUND AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_cluster_faults.c)
  crdt_tap_test(test_cluster_faults_tls SOURCES test_cluster_faults.c cluster_helper.c
                http_client.c hc_tls.c
                LIBS crdt_faultproxy PkgConfig::JANSSON PkgConfig::CL_TLS TIMEOUT 240)
  target_compile_definitions(test_cluster_faults_tls PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>"
                             CL_TLS=1 TLS_CERTS_SH="${PROJECT_SOURCE_DIR}/scripts/tls-certs.sh")
  add_dependencies(test_cluster_faults_tls crdtd)
endif()

# crdtd --store redis:// as processes: two gateways over a real Redis Cluster and one over a
# second Redis, writers of every type through a primary killed, a gateway and a Redis restarted
if(TARGET crdt_module AND TARGET crdtd_store_redis)
  crdt_tap_test(test_scaleout SOURCES test_scaleout.c cluster_helper.c http_client.c ws_raw.c redis_helper.c
                redis_cluster_helper.c ${PROJECT_SOURCE_DIR}/redis-module/logpos.c
                LIBS crdt_faultproxy PkgConfig::JANSSON PkgConfig::HIREDIS
                TIMEOUT 200)
  target_compile_definitions(test_scaleout PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  target_include_directories(test_scaleout PRIVATE ${PROJECT_SOURCE_DIR}/redis-module)
  add_dependencies(test_scaleout crdtd)
  crdt_uses_redis(test_scaleout)
endif()

# active-active between two Redis deployments: a crdtd gateway in front of each, peered through
# fault proxies; writers of every type through a partition, a gateway and a Redis restarted
if(TARGET crdt_module AND TARGET crdtd_store_redis)
  crdt_tap_test(test_redis_aa SOURCES test_redis_aa.c cluster_helper.c http_client.c redis_helper.c
                redis_cluster_helper.c ${PROJECT_SOURCE_DIR}/redis-module/logpos.c
                LIBS crdt_faultproxy PkgConfig::JANSSON PkgConfig::HIREDIS TIMEOUT 200)
  target_include_directories(test_redis_aa PRIVATE ${PROJECT_SOURCE_DIR}/redis-module)
  target_compile_definitions(test_redis_aa PRIVATE CRDTD_BIN="$<TARGET_FILE:crdtd>")
  add_dependencies(test_redis_aa crdtd)
  crdt_uses_redis(test_redis_aa)
endif()
