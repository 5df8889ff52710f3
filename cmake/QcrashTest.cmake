# qcrash_add_test: the one way a test executable is registered with ctest.
#
#   qcrash_add_test(NAME <target> LABELS <unit|property|interop|fuzz-regression>...
#                   SOURCES <files>... [LIBS <targets>...] [TIMEOUT <seconds>])
#
# GoogleTest executables are discovered test by test (RC_GTEST_PROP properties
# included), and every discovered test carries the given labels, so
# `ctest -L property` or `ctest -LE interop` select exactly what they say.
function(qcrash_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "LABELS;SOURCES;LIBS" ${ARGN})
  if(NOT T_NAME OR NOT T_SOURCES OR NOT T_LABELS)
    message(FATAL_ERROR "qcrash_add_test needs NAME, SOURCES and LABELS")
  endif()
  foreach(label IN LISTS T_LABELS)
    if(NOT label MATCHES "^(unit|property|interop|fuzz-regression)$")
      message(FATAL_ERROR "qcrash_add_test(${T_NAME}): unknown label '${label}'")
    endif()
  endforeach()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} rapidcheck_gtest rapidcheck GTest::gtest_main Threads::Threads)
  # gtest_discover_tests passes one ENVIRONMENT entry only (its property
  # lists are split on ';'), so the source tree comes as a definition.
  target_compile_definitions(${T_NAME} PRIVATE QCRASH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  gtest_discover_tests(${T_NAME}
    WORKING_DIRECTORY ${CMAKE_BINARY_DIR}
    PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
               ENVIRONMENT "QCRASH_BINARY_DIR=${CMAKE_BINARY_DIR}"
    DISCOVERY_TIMEOUT 60)
endfunction()
