//! Leaves the load balancer's XDP object, `lb-ebpf`'s `lb-ebpf` binary, at
//! `$OUT_DIR/lb-ebpf.o`, where `src/dataplane` embeds it: built by
//! `lb-ebpf-build`, or `XLB_BPF_OBJECT=/path/to/lb-ebpf.o` to embed that file.

fn main() {
    lb_ebpf_build::object("lb-ebpf", "XLB_BPF_OBJECT");
}
