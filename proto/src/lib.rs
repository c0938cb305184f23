//! faultline's wire types. Domain types live with the components; these only travel.

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

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/descriptor.bin");
