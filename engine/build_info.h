// engine/build_info.h — which source the running binary was built from, for every figure it
// reports (hisvid --version, hisvid_bench's JSON context). Generated at each build by
// engine/build_info.cmake; linked into the binaries that report (library hisvid_build_info).
#pragma once

namespace hisvid {

// The git commit of the build's source tree, abbreviated, "-dirty" when it had uncommitted
// changes; "unknown" where the tree is not a git checkout.
const char* build_commit();

}  // namespace hisvid
