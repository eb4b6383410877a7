// engine/mpi_plugin.cpp — libhisvid_mpi.so: MPI behind the C interface of engine/mpi_plugin.h.
// Built only when CMake finds MPI; loaded by hisvid only under an MPI launcher.
//
// Host sums: MPI_Reduce to rank 0, then MPI_Bcast. An MPI_Allreduce may add in a different order
// on different ranks (recursive doubling), and ranks whose weights drift apart by one bit train
// different models; the reduce-then-broadcast gives every rank rank 0's bits, at twice the
// latency of one allreduce, which CPU ranks (milliseconds per step) do not notice.
#include "engine/mpi_plugin.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

int report(char* error, size_t size, const std::string& text) {
  std::snprintf(error, size, "%s", text.c_str());
  return 1;
}

int mpi_status(int code, const char* what, char* error, size_t size) {
  if (code == MPI_SUCCESS) return 0;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return report(error, size, std::string(what) + ": " + text);
}

MPI_Datatype mpi_type(int type) { return type == kHisvidMpiFloat64 ? MPI_DOUBLE : MPI_FLOAT; }
size_t type_size(int type) { return type == kHisvidMpiFloat64 ? 8 : 4; }

// MPI counts are int: large buffers go in pieces.
constexpr size_t kMaxPiece = size_t(1) << 30;

int sum_host(void* data, size_t count, int type, char* error, size_t size) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto* bytes = static_cast<char*>(data);
  for (size_t at = 0; at < count; at += kMaxPiece) {
    const int n = static_cast<int>(std::min(kMaxPiece, count - at));
    void* piece = bytes + at * type_size(type);
    const int reduced = rank == 0
                            ? MPI_Reduce(MPI_IN_PLACE, piece, n, mpi_type(type), MPI_SUM, 0, MPI_COMM_WORLD)
                            : MPI_Reduce(piece, nullptr, n, mpi_type(type), MPI_SUM, 0, MPI_COMM_WORLD);
    if (mpi_status(reduced, "MPI_Reduce", error, size) != 0) return 1;
    if (mpi_status(MPI_Bcast(piece, n, mpi_type(type), 0, MPI_COMM_WORLD), "MPI_Bcast", error, size) != 0)
      return 1;
  }
  return 0;
}

int broadcast(void* data, size_t bytes, int root, char* error, size_t size) {
  auto* p = static_cast<char*>(data);
  for (size_t at = 0; at < bytes; at += kMaxPiece) {
    const int n = static_cast<int>(std::min(kMaxPiece, bytes - at));
    if (mpi_status(MPI_Bcast(p + at, n, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast", error, size) != 0)
      return 1;
  }
  return 0;
}

int barrier(char* error, size_t size) {
  MPI_Request request;
  if (mpi_status(MPI_Ibarrier(MPI_COMM_WORLD, &request), "MPI_Ibarrier", error, size) != 0) return 1;
  for (int done = 0;;) {
    if (mpi_status(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test", error, size) != 0) return 1;
    if (done) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void abort_job(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int hisvid_mpi_init(HisvidMpi* out, char* error,
                                                                      size_t error_size) {
  int provided = 0;
  if (mpi_status(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", error,
                 error_size) != 0) {
    return 1;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &out->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &out->size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, out->rank, MPI_INFO_NULL, &local);
  int local_size = 1;
  MPI_Comm_rank(local, &out->local_rank);
  MPI_Comm_size(local, &local_size);
  MPI_Comm_free(&local);
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(version, &length);
  std::string library(version);
  library = library.substr(0, library.find_first_of(",\n"));
  std::snprintf(out->description, sizeof out->description, "%s, %d ranks (%d on this machine)",
                library.c_str(), out->size, local_size);
  out->abi = kHisvidMpiAbi;
  out->sum_host = sum_host;
  out->broadcast = broadcast;
  out->barrier = barrier;
  out->abort = abort_job;
  out->finalize = finalize;
  return 0;
}
