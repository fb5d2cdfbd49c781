//! The service with the system allocator alone.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    alloc_track_service_bench::run(false);
}
