//! Leaves the benchmarks' XDP object, `lb-ebpf`'s `lb-ebpf-bench` binary, at
//! `$OUT_DIR/lb-ebpf-bench.o`, where `src/bench_object.rs` embeds it: built
//! by `lb-ebpf-build`, or `XLB_BENCH_BPF_OBJECT=/path/to/lb-ebpf-bench.o` to
//! embed that file.

fn main() {
    lb_ebpf_build::object("lb-ebpf-bench", "XLB_BENCH_BPF_OBJECT");
}
