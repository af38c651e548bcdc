//! Engines: Podman installations a lab can run on. `trixie` is Podman 5.4 from Debian 13 in a
//! root filesystem the harness owns.

pub mod trixie;
