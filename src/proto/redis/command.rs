//! The Redis command table: every command walnut knows, its argument shape and its keys.

/// Twemproxy's arity classes (`redis-command-table.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    Argz,
    Nokey,
    Arg0,
    Arg1,
    Arg2,
    Arg3,
    Argn,
    Argx,
    Argkvx,
    Argeval,
}

/// One known command.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// Upper case, e.g. `GET`.
    pub name: &'static str,
    pub arity: Arity,
}

/// Looks a command name up, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let _ = name;
    todo!()
}

/// True when `argc` (command name included) fits the command's arity class.
pub fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    let _ = (spec, argc);
    todo!()
}
