//! Joining autodiff graphs before replica threads start.
//!
//! Burn 0.21's autodiff keeps one graph per set of connected nodes and merges graphs when an
//! operation has parents in several of them. Registering a node looks its graph up under a
//! global lock, releases that lock, then locks the graph: a merge by another thread in between
//! moves the graph's content elsewhere, and the node lands in a graph nobody reads. Its
//! gradient is then silently missing from `backward()` (seen as one replica's share of a
//! first-layer gradient gone, a few times in a hundred calls).
//!
//! No merge can happen on a replica's thread if every tracked tensor it reads already sits in
//! one graph. A replica of the Keras-style path reads its parameters (`to_device` nodes of the
//! template's) and its shard of the input, so one operation on the caller's thread whose
//! parents are all of those joins them first. The replicas' parameters must be visited
//! themselves, not the template's: once a backward pass has consumed the template's leaves,
//! a new `to_device` node starts a graph of its own.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::run::Job;
use crate::scatter::Scatter;
use crate::transfer::Destination;

/// Joins the autodiff graphs of every float parameter and every float input tensor of the
/// `jobs`, on `host`. Does nothing on a backend without autodiff.
pub(crate) fn join_graphs<B, M, I>(jobs: &[Job<'_, M, I, B::Device>], host: Destination<'_, B>)
where
    B: Backend,
    M: Module<B>,
    I: Scatter<B>,
{
    if !B::ad_enabled(host.device()) {
        return;
    }
    let mut anchors = Anchors::<B> {
        // Bookkeeping (one element per tensor), not traffic.
        host: host.without_count(),
        anchors: Vec::new(),
    };
    for job in jobs {
        job.replica.visit(&mut anchors);
        job.shard.visit_floats(&mut |tensor| anchors.push(tensor));
    }
    if anchors.anchors.len() > 1 {
        // One operation with every anchor as a parent: Burn merges all their graphs here. The
        // result itself is not needed.
        let _ = Tensor::cat(anchors.anchors, 0);
    }
}

/// One element of each tensor, moved to the host: a cheap node in that tensor's graph.
struct Anchors<'a, B: Backend> {
    host: Destination<'a, B>,
    anchors: Vec<Tensor<B, 1>>,
}

impl<B: Backend> Anchors<'_, B> {
    fn push(&mut self, flat: Tensor<B, 1>) {
        if flat.dims()[0] == 0 {
            return;
        }
        let first = flat.narrow(0, 0, 1);
        self.anchors.push(self.host.move_to(first));
    }
}

impl<B: Backend> ModuleVisitor<B> for Anchors<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let len = tensor.shape().num_elements();
        self.push(tensor.reshape([len]));
    }
}
