// Process-wide settings a cutlayer binary applies once at the start of main().
#pragma once

namespace cutlayer {

// Keeps large message buffers in the heap instead of mapping and unmapping them for
// every message: glibc's mmap threshold raised to its 32 MiB maximum, trimming only
// past 1 GiB of free heap, and one arena, because tensor frames are allocated by one
// thread (the app's or ZeroMQ's I/O thread) and freed by the other. Measured on the
// 8 MiB sealed-channel benchmark: ~15% more throughput, a third of the page faults.
void tune_allocator();

// One thread pool, not two: LibTorch's intra-op threads (OpenMP) already split the work,
// and Debian's OpenBLAS (libopenblas0-pthread) would start its own threads inside each of
// them, so on 2 cores the two pools spin against each other. When OpenBLAS is the BLAS
// in use, its own threading is turned off (openblas_set_num_threads(1), found at run
// time). Measured (cutlayer-train, fmnist-cnn, 2 threads): ~3,300 samples/s with both
// pools, ~6,800 with one; with NoPeek 1,455-2,200 and ~5,600.
void tune_threads();

// For the split daemons: a client and a server on the same cores take turns, and an idle
// process's OpenMP workers spinning in wait steal the busy one's cores. OpenMP reads
// OMP_WAIT_POLICY only when the program starts, so when it is unset this sets it to
// PASSIVE and re-executes the program (same arguments) once; an explicit setting is
// left alone. Measured (1 client + server, 2 threads each): 3,650 -> 4,250-4,520
// samples/s.
void prefer_passive_openmp(char** argv);

}  // namespace cutlayer
