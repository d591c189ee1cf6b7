//! `tune_cpu_process` sets up the process as its documentation says: candle's pool limited to
//! one thread, and the calling thread a worker of Rayon's global pool, so that a parallel loop
//! started on it runs partly on it. Its own test binary without the harness (`harness =
//! false`): the function must run before any other thread exists.

use rayon::prelude::*;

fn main() {
    // SAFETY: the first statement of main, before any thread starts (the function's contract).
    unsafe { explr_nn::tune_cpu_process() };
    assert_eq!(
        std::env::var("CANDLE_NUM_THREADS").as_deref(),
        Ok("1"),
        "candle's element-wise pool is limited to the calling thread"
    );
    assert_eq!(
        rayon::current_thread_index(),
        Some(0),
        "the calling thread is worker 0 of Rayon's global pool"
    );
    let me = std::thread::current().id();
    let here = (0..64)
        .into_par_iter()
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            std::thread::current().id() == me
        })
        .filter(|here| *here)
        .count();
    assert!(
        here > 0,
        "a parallel loop started on the calling thread runs partly on it"
    );
    println!("test tune_cpu_process_makes_the_calling_thread_a_rayon_worker ... ok");
}
