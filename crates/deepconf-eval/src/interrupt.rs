//! Ctrl-C: the first one asks the run to stop cleanly, a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The process-wide interrupt flag, with the Ctrl-C handler installed on first use. The first
/// Ctrl-C raises the flag (the engine then writes what is finished and stops); a second one exits
/// with status 130 straight away. When a handler cannot be installed (another library has one)
/// the flag still works but is never raised by Ctrl-C.
pub(crate) fn interrupt_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    Arc::clone(FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let raised = Arc::clone(&flag);
        let installed = ctrlc::set_handler(move || {
            if raised.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted twice: exiting now");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: writing what is finished (Ctrl-C again to exit at once)");
        });
        if let Err(e) = installed {
            eprintln!("note: no Ctrl-C handler ({e}); an interrupt will kill the run, --resume continues it");
        }
        flag
    }))
}
