# Writes ${OUTPUT}: a C++ file mapping each models/zoo/*.json name to its text.
file(GLOB specs "${ZOO_DIR}/*.json")
list(SORT specs)
set(body "")
foreach(spec IN LISTS specs)
  get_filename_component(name "${spec}" NAME_WE)
  file(READ "${spec}" text)
  string(APPEND body "      {\"${name}\", R\"hisvid_zoo(${text})hisvid_zoo\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "// Generated from models/zoo/*.json by models/embed_zoo.cmake; do not edit.
#include <map>
#include <string>

namespace hisvid::models {

const std::map<std::string, const char*>& zoo_texts() {
  static const std::map<std::string, const char*> texts = {
${body}  };
  return texts;
}

}  // namespace hisvid::models
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
