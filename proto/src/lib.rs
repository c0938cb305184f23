//! faultline's wire types, and the transport every side uses to carry them. Domain
//! types live with the components; these only travel.

pub mod doctor;
pub mod service;
pub mod transport;

pub mod agent {
    // Generated: its doc comments are the .proto's, not written for rustdoc lints.
    #[allow(clippy::pedantic)]
    pub mod v1 {
        include!("gen/faultline.agent.v1.rs");
    }
}

pub mod controller {
    #[allow(clippy::pedantic)]
    pub mod v1 {
        include!("gen/faultline.controller.v1.rs");
    }
}

impl agent::v1::fault_spec::Kind {
    /// The kind's name as the CLI, logs and metrics labels spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Netem(_) => "netem",
            Self::Bandwidth(_) => "bandwidth",
            Self::Drop(_) => "drop",
            Self::Partition(_) => "partition",
            Self::Freeze(_) => "freeze",
            Self::Kill(_) => "kill",
            Self::Restart(_) => "restart",
            Self::CpuStress(_) => "cpu_stress",
            Self::MemoryPressure(_) => "memory_pressure",
            Self::CpuThrottle(_) => "cpu_throttle",
        }
    }
}

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/descriptor.bin");
