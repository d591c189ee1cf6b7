//! explr-schedule: placeholder until its issue lands.
