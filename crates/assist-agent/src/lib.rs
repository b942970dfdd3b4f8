//! The Linux/X11 sharer agent (docs/clients.md).
