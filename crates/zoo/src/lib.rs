//! explr-zoo: placeholder until its issue lands.
