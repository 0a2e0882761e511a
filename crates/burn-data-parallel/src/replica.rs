//! Running the replicas: one named thread per device, joined in device order.

use core::fmt::Debug;
use core::ops::Range;
use std::any::Any;
use std::thread;

use crate::error::{DataParallelError, Result};

/// One replica's work: its model, its shard, and where it came from.
pub(crate) struct Job<'a, M, I, D> {
    pub(crate) replica: M,
    pub(crate) shard: I,
    pub(crate) device: &'a D,
    pub(crate) rows: Range<usize>,
}

/// Runs `work` on every job, each on its own scoped thread named `dp-replica-{index}`, and
/// returns the replicas with their outputs in device order.
///
/// # Notes
///
/// Every thread is joined before this returns, also when one fails. A panic inside `work` is
/// caught and becomes [`DataParallelError::ReplicaPanicked`] naming the device and the rows of
/// the batch; when several replicas fail, the first in device order is reported.
pub(crate) fn run_replicas<M, I, O, D, F>(
    jobs: Vec<Job<'_, M, I, D>>,
    work: &F,
) -> Result<Vec<(M, O)>>
where
    M: Send,
    I: Send,
    O: Send,
    D: Debug + Sync,
    F: Fn(&M, I) -> O + Sync,
{
    thread::scope(|scope| {
        let mut running = Vec::with_capacity(jobs.len());
        let mut spawn_error = None;
        for (index, job) in jobs.into_iter().enumerate() {
            let Job {
                replica,
                shard,
                device,
                rows,
            } = job;
            let spawned = thread::Builder::new()
                .name(format!("dp-replica-{index}"))
                .spawn_scoped(scope, move || {
                    let output = work(&replica, shard);
                    (replica, output)
                });
            match spawned {
                Ok(handle) => running.push((index, device, rows, handle)),
                Err(error) => {
                    spawn_error = Some(DataParallelError::ThreadSpawn {
                        index,
                        device: format!("{device:?}"),
                        message: error.to_string(),
                    });
                    break;
                }
            }
        }

        // Join every thread before looking at any result, so nothing is left running.
        let joined: Vec<_> = running
            .into_iter()
            .map(|(index, device, rows, handle)| (index, device, rows, handle.join()))
            .collect();
        if let Some(error) = spawn_error {
            return Err(error);
        }
        joined
            .into_iter()
            .map(|(index, device, rows, result)| {
                result.map_err(|payload| DataParallelError::ReplicaPanicked {
                    index,
                    device: format!("{device:?}"),
                    rows,
                    message: panic_message(payload.as_ref()),
                })
            })
            .collect()
    })
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "the panic carried no message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(devices: &[u32]) -> Vec<Job<'_, u32, u32, u32>> {
        devices
            .iter()
            .enumerate()
            .map(|(index, device)| Job {
                replica: index as u32,
                shard: index as u32 * 10,
                device,
                rows: index..index + 1,
            })
            .collect()
    }

    #[test]
    fn outputs_come_back_in_device_order_from_named_threads() {
        let outputs = run_replicas(jobs(&[7, 8, 9]), &|replica: &u32, shard: u32| {
            let name = thread::current().name().map(str::to_string);
            (replica + shard, name)
        })
        .expect("no replica fails");
        let names: Vec<_> = outputs.iter().map(|(_, (_, name))| name.clone()).collect();
        assert_eq!(
            names,
            ["dp-replica-0", "dp-replica-1", "dp-replica-2"].map(|n| Some(n.to_string()))
        );
        let sums: Vec<_> = outputs.iter().map(|(_, (sum, _))| *sum).collect();
        assert_eq!(sums, [0, 11, 22]);
    }

    #[test]
    fn the_first_failing_replica_is_named_after_all_joined() {
        let finished = std::sync::atomic::AtomicUsize::new(0);
        let result = run_replicas(jobs(&[7, 8, 9]), &|replica: &u32, _shard: u32| {
            if *replica >= 1 {
                panic!("boom on {replica}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(
            result.err(),
            Some(DataParallelError::ReplicaPanicked {
                index: 1,
                device: "8".to_string(),
                rows: 1..2,
                message: "boom on 1".to_string(),
            })
        );
        assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
