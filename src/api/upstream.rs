//! The upstream port, as the API uses it (the trait is in the core).

pub use icarus_core::ports::upstream::{Upstream, UpstreamError};
