//! Burn's module traits for [`DataParallel`], all forwarded to the template.
//!
//! These impls are written by hand rather than derived: a derived wrapper would nest the
//! template's record under a field name, so its files would not load into the bare model.
//! Forwarding without `enter_module` keeps the record, and every parameter path, identical to
//! the template's.

use core::fmt;

use burn::module::{
    AutodiffModule, Content, Devices, HasAutodiffModule, Module, ModuleDisplay,
    ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::data_parallel::DataParallel;
use crate::kind::DeviceKinds;

impl<B: Backend, M: Module<B>> Module<B> for DataParallel<B, M> {
    type Record = M::Record;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        self.template().collect_devices(devices)
    }

    /// Forks the template to `device`, which becomes the host.
    fn fork(self, device: &B::Device) -> Self {
        self.with_host(device.clone())
    }

    /// Moves the template to `device`, which becomes the host, as [`fork`](Module::fork) does.
    ///
    /// The template is what the optimizer updates, so its parameters must stay trainable
    /// leaves. Burn's `to_device` of a parameter keeps it linked to the old device's leaf and
    /// clears its `require_grad` flag: replicas made from such a template would get no
    /// gradients, and training would silently stop.
    fn to_device(self, device: &B::Device) -> Self {
        self.with_host(device.clone())
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        self.template().visit(visitor);
    }

    fn map<Mapper: ModuleMapper<B>>(self, mapper: &mut Mapper) -> Self {
        Self {
            template: self.template.map(mapper),
            ..self
        }
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            template: self.template.load_record(record),
            ..self
        }
    }

    fn into_record(self) -> Self::Record {
        self.into_inner().into_record()
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> AutodiffModule<B> for DataParallel<B, M> {
    type InnerModule = DataParallel<B::InnerBackend, M::InnerModule>;

    fn valid(&self) -> Self::InnerModule {
        DataParallel {
            template: self.template.valid(),
            devices: self.devices.clone(),
            host: self.host.clone(),
            // The same kinds, seen from the inner backend.
            kinds: DeviceKinds::of(&self.host, &self.devices),
            reduction: self.reduction,
            split: self.split.clone(),
            failure_policy: self.failure_policy,
            step_deadline: self.step_deadline,
            synced_phases: self.synced_phases,
            traffic: self.traffic.clone(),
            workers: self.workers.clone(),
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        DataParallel {
            template: M::from_inner(module.template),
            kinds: DeviceKinds::of(&module.host, &module.devices),
            devices: module.devices,
            host: module.host,
            reduction: module.reduction,
            split: module.split,
            failure_policy: module.failure_policy,
            step_deadline: module.step_deadline,
            synced_phases: module.synced_phases,
            traffic: module.traffic,
            workers: module.workers,
        }
    }
}

impl<B: AutodiffBackend, M> HasAutodiffModule<B> for DataParallel<B::InnerBackend, M>
where
    M: Module<B::InnerBackend> + HasAutodiffModule<B>,
{
    type TrainModule = DataParallel<B, M::TrainModule>;
}

impl<B: Backend, M: Module<B> + ModuleDisplay> ModuleDisplayDefault for DataParallel<B, M> {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .set_top_level_type("DataParallel")
            .add_debug_attribute("devices", &self.replica_devices())
            .add_debug_attribute("host", self.host())
            .add("template", self.template())
            .optional()
    }

    fn num_params(&self) -> usize {
        Module::num_params(self.template())
    }
}

impl<B: Backend, M: Module<B> + ModuleDisplay> ModuleDisplay for DataParallel<B, M> {}

impl<B: Backend, M: Module<B> + ModuleDisplay> fmt::Display for DataParallel<B, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.format(Default::default()))
    }
}
