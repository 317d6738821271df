//! lastcall
