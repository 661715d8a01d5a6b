//! The PostgreSQL backend (being written).

pub(crate) mod migrate {
    pub(crate) const SUPPORTED_VERSION: i64 = 1;
}
