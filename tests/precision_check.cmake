# bench/precision.cpp end to end on the CPU (ctest: bench.precision_cpu): a short run of two
# models, each trained twice in float32, must finish, write its JSON, and give the same
# predictions twice (training on the CPU is deterministic: 100% of the test clips alike, a
# largest probability difference of exactly 0); TF32 or CUDA graphs on the CPU, an unknown
# precision and a list of no names are refused with a message naming the option.
#   cmake -DPROGRAM=<hisvid_precision> -DWORK=<scratch dir> -P precision_check.cmake
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
execute_process(
  COMMAND "${PROGRAM}" --device cpu --precisions float32,float32 --models lrcn,convlstm_small
          --clips-per-class 6 --lrcn-epochs 2 --convlstm-epochs 1 --json "${WORK}/runs.json"
  RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
message("${output}")
if(NOT status EQUAL 0)
  message(FATAL_ERROR "hisvid_precision exited with ${status}")
endif()
file(READ "${WORK}/runs.json" json)
string(JSON runs LENGTH "${json}" runs)
if(NOT runs EQUAL 4)
  message(FATAL_ERROR "runs.json holds ${runs} runs, not 4 (2 models x 2 precisions)")
endif()
math(EXPR last "${runs} - 1")
foreach(i RANGE ${last})
  string(JSON model GET "${json}" runs ${i} model)
  string(JSON epochs GET "${json}" runs ${i} epochs)
  string(JSON accuracy GET "${json}" runs ${i} test_accuracy)
  string(JSON same GET "${json}" runs ${i} same_class_as_first)
  string(JSON difference GET "${json}" runs ${i} largest_probability_difference)
  string(JSON predicted LENGTH "${json}" runs ${i} predicted)
  if(epochs LESS 1 OR epochs GREATER 2)
    message(FATAL_ERROR "run ${i} (${model}): ${epochs} epochs, not 1 or 2")
  endif()
  if(accuracy LESS 0 OR accuracy GREATER 1)
    message(FATAL_ERROR "run ${i} (${model}): test accuracy ${accuracy} is not in [0, 1]")
  endif()
  # 6 clips of 6 classes, 25% held out: ceil(0.25 * 36) = 9 test clips.
  if(NOT predicted EQUAL 9)
    message(FATAL_ERROR "run ${i} (${model}): ${predicted} test predictions, not 9")
  endif()
  if(NOT same EQUAL 1 OR NOT difference EQUAL 0)
    message(FATAL_ERROR "run ${i} (${model}): the same float32 training gave other predictions "
                        "(${same} alike, largest probability difference ${difference})")
  endif()
endforeach()

foreach(case "--precisions;tf32;needs a CUDA device" "--precisions;float16;is not a precision"
             "--cuda-graphs;float32;needs a CUDA device")
  list(GET case 0 option)
  list(GET case 1 precision)
  list(GET case 2 expected)
  set(extra)
  if(option STREQUAL "--cuda-graphs")
    set(extra --cuda-graphs)
  endif()
  execute_process(COMMAND "${PROGRAM}" --device cpu --precisions ${precision} --models lrcn ${extra}
                  RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
  if(status EQUAL 0 OR NOT output MATCHES "${option}.*${expected}")
    message(FATAL_ERROR "${option} (--precisions ${precision}) on the CPU: exit ${status}, expected a refusal "
                        "naming ${option} ('${expected}'); got: ${output}")
  endif()
endforeach()

# A list of no names (CLI11 splits the lists at commas and drops empty names) is refused naming
# the option.
execute_process(COMMAND "${PROGRAM}" --device cpu --precisions float32 --models ,
                RESULT_VARIABLE status OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(status EQUAL 0 OR NOT output MATCHES "--models")
  message(FATAL_ERROR "--models ,: exit ${status}, expected a refusal naming --models; got: ${output}")
endif()
file(REMOVE_RECURSE "${WORK}")
