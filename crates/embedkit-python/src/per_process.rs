//! [`PerProcess`]: a loaded model that a forked child loads again instead of using its parent's.

use pyo3::exceptions::PyRuntimeError;
use pyo3::{PyErr, PyResult};
use std::sync::{Arc, RwLock};

/// A value loaded in one process, with the process id that loaded it. After `fork()` (multiprocessing,
/// PySpark) the child has none of the parent's worker threads and shares its connections, so
/// [`PerProcess::get`] loads a fresh value there.
pub struct PerProcess<T> {
    slot: RwLock<(u32, Arc<T>)>,
}

impl<T> PerProcess<T> {
    /// `value`, loaded by this process.
    pub fn new(value: T) -> Self {
        PerProcess {
            slot: RwLock::new((std::process::id(), Arc::new(value))),
        }
    }

    /// The value of this process: the one it holds, or (in a forked child) a fresh one from `load`.
    pub fn get(&self, load: impl FnOnce() -> PyResult<T>) -> PyResult<Arc<T>> {
        let pid = std::process::id();
        {
            let slot = self.slot.read().map_err(|_| poisoned())?;
            if slot.0 == pid {
                return Ok(slot.1.clone());
            }
        }
        let mut slot = self.slot.write().map_err(|_| poisoned())?;
        if slot.0 != pid {
            let fresh = (pid, Arc::new(load()?));
            let stale = std::mem::replace(&mut *slot, fresh);
            // The parent's pool has no threads here and its locks may have been copied mid-use: never touch
            // it (dropping a rayon pool signals its workers). The pages are shared copy-on-write anyway.
            std::mem::forget(stale);
        }
        Ok(slot.1.clone())
    }
}

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("the model's state was poisoned by a panic in another thread")
}
