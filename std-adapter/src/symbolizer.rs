//! Reads the program's own debug info to turn return addresses into
//! functions, files and lines, with memory bounded by what it answers.
//!
//! A batch of addresses is resolved at once: sorted, split by the loaded
//! object they lie in (the executable, a shared library), and each object's
//! file read through a read-only mapping that the kernel can drop and that
//! is unmapped when the object is done. DWARF is read by `gimli` one compile
//! unit at a time: the units that hold the batch's addresses are found by
//! `.debug_aranges` (or, without it, by each unit's own ranges), the others
//! are never read, and a unit that holds some has its line
//! program run as a state machine (no table of rows is built) and its tree
//! of functions walked for the inlined calls around each address, then
//! dropped before the next unit. What stays is the answers. Addresses that
//! the debug info does not name (no debug info, or code without it) are
//! named from the symbol table, read the same way.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;

use gimli::{constants, AttributeValue, EndianSlice, RunTimeEndian, UnitRef};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::symbol::BacktraceSymbol;

type Reader<'data> = EndianSlice<'data, RunTimeEndian>;

/// How deep a chain of `DW_AT_abstract_origin` and `DW_AT_specification`
/// references is followed for a function's name.
const NAME_HOPS: usize = 8;

/// Resolves every address of `addresses` (return addresses: the call is
/// the byte before), returning their symbols in the same order, innermost
/// function first; an empty list where nothing names an address.
pub(crate) fn resolve(addresses: &[usize]) -> Vec<Vec<BacktraceSymbol>> {
    let mut answers = vec![Vec::new(); addresses.len()];
    let objects = crate::loaded::loaded_objects();
    // Each address's probe (the call, one byte back) in the object it lies
    // in, as an address of that object's file.
    let mut by_object: Vec<Vec<Probe>> = vec![Vec::new(); objects.len()];
    for (index, &address) in addresses.iter().enumerate() {
        let call = address.saturating_sub(1);
        if let Some((which, object)) = objects
            .iter()
            .enumerate()
            .find(|(_, object)| object.contains(call))
        {
            by_object[which].push(Probe {
                address: call.wrapping_sub(object.bias) as u64,
                index,
            });
        }
    }
    for (object, mut probes) in objects.iter().zip(by_object) {
        if probes.is_empty() {
            continue;
        }
        probes.sort_unstable_by_key(|probe| probe.address);
        let found = resolve_in_object(object, &probes);
        for (probe, symbols) in probes.iter().zip(found) {
            answers[probe.index] = symbols;
        }
    }
    answers
}

/// One address to resolve: where it lies in its object's file, and where
/// its answer goes.
#[derive(Clone, Copy, Debug)]
struct Probe {
    address: u64,
    index: usize,
}

/// A read-only mapping of a whole file, unmapped when dropped.
struct Mapped(memmap2::Mmap);

impl Mapped {
    fn open(path: &std::path::Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        // SAFETY: the mapping is read-only and private, and its bytes are
        // only read through slices that die with it. The executable cannot
        // be written while it runs (the kernel refuses, `ETXTBSY`); a shared
        // library or debug file truncated on disk while it is read would
        // fault, a hazard every reader of a program's own files shares.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        // Read in no particular order: no read-ahead of what is not asked.
        let _ = map.advise(memmap2::Advice::Random);
        Some(Mapped(map))
    }

    /// Drops the pages of the file read so far from this process's memory:
    /// what is read again comes back from the kernel's page cache.
    fn let_go(&self) {
        // SAFETY: the mapping is private and read-only, and never written
        // (no page of it is a private copy): dropping its pages loses
        // nothing, and a later read of any of its bytes reads the same
        // bytes from the file again. No slice into it is written.
        let _ = unsafe { self.0.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }
}

/// How many compile units are gone through between two drops of the pages
/// read ([`Mapped::let_go`]): the resident memory that reading the debug
/// info costs stays within what these units and their strings take.
const UNITS_PER_LET_GO: usize = 64;

/// The symbols of `probes` (sorted by address) in `object`'s file.
fn resolve_in_object(
    object: &crate::loaded::LoadedObject,
    probes: &[Probe],
) -> Vec<Vec<BacktraceSymbol>> {
    let mut answers: Vec<Answer> = vec![Answer::default(); probes.len()];
    if let Some(mapped) = Mapped::open(&object.path) {
        if let Ok(file) = object::File::parse(&*mapped.0) {
            let debug = separate_debug_file(&file);
            let with_dwarf = debug
                .as_ref()
                .and_then(|mapped| object::File::parse(&*mapped.0).ok());
            let dwarf_file = with_dwarf.as_ref().unwrap_or(&file);
            if let Some(dwarf) = load_dwarf(dwarf_file) {
                let let_go = || debug.as_ref().unwrap_or(&mapped).let_go();
                let _ = read_units(&dwarf, probes, &mut answers, &let_go);
            }
            symbol_table(&file, probes, &mut answers);
        }
    }
    answers.into_iter().map(Answer::into_symbols).collect()
}

/// The debug info installed apart from a stripped object, under
/// `/usr/lib/debug/.build-id/`, when the object has no `.debug_info` of its
/// own.
fn separate_debug_file(file: &object::File<'_>) -> Option<Mapped> {
    if file.section_by_name(".debug_info").is_some() {
        return None;
    }
    let id = file.build_id().ok()??;
    let (first, rest) = id.split_first()?;
    let hex: String = rest.iter().map(|byte| format!("{byte:02x}")).collect();
    Mapped::open(&PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{first:02x}/{hex}.debug"
    )))
}

/// The DWARF sections of `file`, borrowed from its mapping. Compressed
/// sections are left out (read as empty): their addresses are named from
/// the symbol table.
fn load_dwarf<'data>(file: &object::File<'data>) -> Option<gimli::Dwarf<Reader<'data>>> {
    file.section_by_name(".debug_info")?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let section = |id: gimli::SectionId| -> Result<Reader<'data>, ()> {
        let data = file
            .section_by_name(id.name())
            .filter(|section| {
                section
                    .compressed_data()
                    .is_ok_and(|data| data.format == object::CompressionFormat::None)
            })
            .and_then(|section| section.data().ok())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(data, endian))
    };
    gimli::Dwarf::load(section).ok()
}

/// What the debug info and the symbol table say of one probe.
#[derive(Clone, Debug, Default)]
struct Answer {
    /// The line table's row for the address.
    location: Option<Location>,
    /// The functions around the address, outermost first: the function
    /// itself, then each inlined call, each with where it was called from.
    functions: Vec<Function>,
    /// The symbol table's name for the address.
    symbol: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Location {
    file: Option<PathBuf>,
    line: Option<u32>,
    column: Option<u32>,
}

#[derive(Clone, Debug, Default)]
struct Function {
    name: Option<String>,
    /// Where an inlined function was called from; `None` for the function
    /// the code was compiled as.
    call: Option<Location>,
}

impl Answer {
    /// The symbols, innermost first: each inlined function at the place in
    /// its caller's code where it was called, the innermost at the address's
    /// own line.
    fn into_symbols(self) -> Vec<BacktraceSymbol> {
        let Answer {
            location,
            mut functions,
            symbol,
        } = self;
        if functions.is_empty() {
            if location.is_none() && symbol.is_none() {
                return Vec::new();
            }
            functions.push(Function::default());
        }
        // The function the code was compiled as takes the symbol table's
        // name where the debug info gives none, or only a plain one: built
        // with line tables only, a function's entry has its name without
        // its path (`parse` for `serde_json::de::parse`), which the symbol
        // table's demangled name has.
        let plain = functions[0]
            .name
            .as_deref()
            .is_none_or(|name| !name.contains("::"));
        if plain && symbol.is_some() {
            functions[0].name = symbol;
        }
        let mut symbols = Vec::with_capacity(functions.len());
        let mut at = location.unwrap_or_default();
        for function in functions.into_iter().rev() {
            symbols.push(BacktraceSymbol::new(
                function.name.as_deref(),
                at.file.as_deref(),
                at.line,
                at.column,
            ));
            at = function.call.unwrap_or_default();
        }
        symbols
    }
}

/// The indices into `probes` (sorted by address) of those in
/// `begin..end`, appended to `out`.
fn probes_in(probes: &[Probe], within: &[usize], begin: u64, end: u64, out: &mut Vec<usize>) {
    let first = within.partition_point(|&index| probes[index].address < begin);
    for &index in &within[first..] {
        if probes[index].address >= end {
            break;
        }
        out.push(index);
    }
}

/// Finds the compile unit of each probe and resolves the probes of each
/// unit that holds some, a unit at a time: first by the address ranges of
/// `.debug_aranges`, so that only the units that hold a probe are read at
/// all; then, for the probes left (no aranges, or aranges that named a
/// unit without them), by the own ranges of the other units. The pages
/// read are let go of as it goes (`let_go`).
fn read_units(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    probes: &[Probe],
    answers: &mut [Answer],
    let_go: &dyn Fn(),
) -> gimli::Result<()> {
    let mut found = vec![false; probes.len()];
    let mut read_already = Vec::new();
    let (units, listed) = units_by_aranges(dwarf, probes)?;
    // Where the aranges list units, a probe that none of their ranges holds
    // lies in code without debug info (the `main` the compiler writes, the
    // C runtime's start): the symbol table names it.
    if listed {
        found.fill(true);
        for &index in units.iter().flat_map(|(_, mine)| mine) {
            found[index] = false;
        }
    }
    for (offset, mine) in units {
        let Ok(header) = dwarf.debug_info.header_from_offset(offset) else {
            continue;
        };
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        read_unit(UnitRef::new(dwarf, &unit), probes, &mine, answers)?;
        read_already.push(offset.0);
        // The aranges are a linker's copy of what the units say, and not
        // always a faithful one: a probe its unit does not hold is looked
        // for below.
        for &index in &mine {
            found[index] =
                answers[index].location.is_some() || !answers[index].functions.is_empty();
        }
        let_go();
    }
    read_already.sort_unstable();
    // The probes left: the other units are gone through, by their own
    // ranges, until every probe has been found in one.
    let all: Vec<usize> = (0..probes.len()).collect();
    let mut left = found.iter().filter(|&&found| !found).count();
    let mut headers = dwarf.units();
    let mut mine = Vec::new();
    let mut read = 0;
    while left > 0 {
        let Some(header) = headers.next()? else {
            break;
        };
        read += 1;
        if read % UNITS_PER_LET_GO == 0 {
            let_go();
        }
        if let Some(offset) = header.offset().as_debug_info_offset() {
            if read_already.binary_search(&offset.0).is_ok() {
                continue;
            }
        }
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let unit = UnitRef::new(dwarf, &unit);
        mine.clear();
        let mut ranges = unit.unit_ranges()?;
        while let Some(range) = ranges.next()? {
            probes_in(probes, &all, range.begin, range.end, &mut mine);
        }
        mine.sort_unstable();
        mine.dedup();
        mine.retain(|&index| !found[index]);
        if mine.is_empty() {
            continue;
        }
        for &index in &mine {
            found[index] = true;
        }
        left -= mine.len();
        read_unit(unit, probes, &mine, answers)?;
    }
    let_go();
    Ok(())
}

/// The probes of each compile unit that holds some, by `.debug_aranges`
/// (none without it), in the order of the units; and whether the aranges
/// list any unit.
fn units_by_aranges(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    probes: &[Probe],
) -> gimli::Result<(ProbesByUnit, bool)> {
    let all: Vec<usize> = (0..probes.len()).collect();
    let mut units: Vec<(gimli::DebugInfoOffset, Vec<usize>)> = Vec::new();
    let mut found = vec![false; probes.len()];
    let mut listed = false;
    let mut headers = dwarf.debug_aranges.headers();
    while let Some(header) = headers.next()? {
        listed = true;
        let mut mine = Vec::new();
        let mut entries = header.entries();
        while let Some(entry) = entries.next()? {
            let range = entry.range();
            probes_in(probes, &all, range.begin, range.end, &mut mine);
        }
        mine.sort_unstable();
        mine.dedup();
        mine.retain(|&index| !std::mem::replace(&mut found[index], true));
        if !mine.is_empty() {
            units.push((header.debug_info_offset(), mine));
        }
    }
    units.sort_unstable_by_key(|(offset, _)| offset.0);
    Ok((units, listed))
}

/// Probes by the compile unit that holds them.
type ProbesByUnit = Vec<(gimli::DebugInfoOffset, Vec<usize>)>;

/// Resolves the probes of `mine`, all in `unit`'s code: their lines, and
/// the functions around them. A unit whose debug info is damaged keeps
/// what was read of it.
fn read_unit(
    unit: UnitRef<'_, Reader<'_>>,
    probes: &[Probe],
    mine: &[usize],
    answers: &mut [Answer],
) -> gimli::Result<()> {
    let _ = read_lines(unit, probes, mine, answers);
    let mut tree = unit.entries_tree(None)?;
    let root = tree.root()?;
    let _ = walk_functions(unit, root, probes, mine, answers);
    Ok(())
}

/// Runs the unit's line program and gives each probe of `mine` the row
/// that covers its address. Sequences that start at address 0 are code the
/// linker dropped, left out.
fn read_lines<'data>(
    unit: UnitRef<'_, Reader<'data>>,
    probes: &[Probe],
    mine: &[usize],
    answers: &mut [Answer],
) -> gimli::Result<()> {
    let Some(program) = unit.line_program.clone() else {
        return Ok(());
    };
    let mut rows = program.rows();
    // The previous row of the sequence: its address, file, line and column.
    let mut previous: Option<(u64, u64, u32, u32)> = None;
    let mut dropped_sequence = false;
    let mut sequence_start = true;
    let mut covered = Vec::new();
    let mut files: HashMap<u64, Option<PathBuf>> = HashMap::new();
    while let Some((header, row)) = rows.next_row()? {
        if sequence_start {
            dropped_sequence = row.address() == 0;
            sequence_start = false;
        }
        if let Some((address, file, line, column)) = previous {
            if !dropped_sequence && row.address() > address {
                covered.clear();
                probes_in(probes, mine, address, row.address(), &mut covered);
                for &index in &covered {
                    let path = files
                        .entry(file)
                        .or_insert_with(|| file_path(unit, header, file))
                        .clone();
                    answers[index].location = Some(Location {
                        file: path,
                        line: (line != 0).then_some(line),
                        column: (column != 0).then_some(column),
                    });
                }
            }
        }
        if row.end_sequence() {
            previous = None;
            sequence_start = true;
        } else {
            let line = row.line().map_or(0, |line| line.get() as u32);
            let column = match row.column() {
                gimli::ColumnType::LeftEdge => 0,
                gimli::ColumnType::Column(column) => column.get() as u32,
            };
            previous = Some((row.address(), row.file_index(), line, column));
        }
    }
    Ok(())
}

/// The path of file `index` of the unit's line program: the compilation
/// directory, the file's directory and its name, joined.
fn file_path<'data>(
    unit: UnitRef<'_, Reader<'data>>,
    header: &gimli::LineProgramHeader<Reader<'data>>,
    index: u64,
) -> Option<PathBuf> {
    let file = header.file(index)?;
    let mut path = unit
        .comp_dir
        .map(|dir| PathBuf::from(dir.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // Directory 0 is the compilation directory itself.
    if file.directory_index() != 0 {
        if let Some(directory) = file.directory(header) {
            path.push(text(unit, directory)?);
        }
    }
    path.push(text(unit, file.path_name())?);
    Some(path)
}

/// A string attribute's text.
fn text<'data>(
    unit: UnitRef<'_, Reader<'data>>,
    value: AttributeValue<Reader<'data>>,
) -> Option<String> {
    unit.attr_string(value)
        .ok()
        .map(|text| text.to_string_lossy().into_owned())
}

type Node<'abbrev, 'unit, 'tree, 'data> =
    gimli::EntriesTreeNode<'abbrev, 'unit, 'tree, Reader<'data>>;

/// Walks the children of `node` for the functions around the probes of
/// `within` (all inside `node`'s code, or anywhere for the unit's root):
/// a function's code starts each probe's list afresh, an inlined call adds
/// to it, and the scopes that may hold either (namespaces, types, lexical
/// blocks) are walked through. Entries that hold none of the probes are
/// passed over without their children.
fn walk_functions<'data>(
    unit: UnitRef<'_, Reader<'data>>,
    node: Node<'_, '_, '_, 'data>,
    probes: &[Probe],
    within: &[usize],
    answers: &mut [Answer],
) -> gimli::Result<()> {
    let mut children = node.children();
    let mut inside = Vec::new();
    while let Some(child) = children.next()? {
        let entry = child.entry();
        let tag = entry.tag();
        match tag {
            constants::DW_TAG_subprogram | constants::DW_TAG_inlined_subroutine => {
                inside.clear();
                let mut ranges = unit.die_ranges(entry)?;
                while let Some(range) = ranges.next()? {
                    probes_in(probes, within, range.begin, range.end, &mut inside);
                }
                if inside.is_empty() {
                    continue;
                }
                inside.sort_unstable();
                inside.dedup();
                let name = function_name(unit, entry, NAME_HOPS);
                if tag == constants::DW_TAG_subprogram {
                    for &index in &inside {
                        answers[index].functions = vec![Function {
                            name: name.clone(),
                            call: None,
                        }];
                    }
                } else {
                    let call = call_site(unit, entry);
                    for &index in &inside {
                        answers[index].functions.push(Function {
                            name: name.clone(),
                            call: Some(call.clone()),
                        });
                    }
                }
                let inside = std::mem::take(&mut inside);
                walk_functions(unit, child, probes, &inside, answers)?;
            }
            constants::DW_TAG_lexical_block
            | constants::DW_TAG_namespace
            | constants::DW_TAG_module
            | constants::DW_TAG_structure_type
            | constants::DW_TAG_class_type
            | constants::DW_TAG_union_type => {
                walk_functions(unit, child, probes, within, answers)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where the inlined call `entry` was made: its call file, line and column.
fn call_site<'data>(
    unit: UnitRef<'_, Reader<'data>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'data>>,
) -> Location {
    let number = |name| {
        entry
            .attr_value(name)
            .ok()
            .flatten()
            .and_then(|value| value.udata_value())
    };
    // gimli reads a call file as an index of the line program's files.
    let file_index = match entry.attr_value(constants::DW_AT_call_file) {
        Ok(Some(AttributeValue::FileIndex(index))) => Some(index),
        Ok(Some(value)) => value.udata_value(),
        _ => None,
    };
    let file = file_index.and_then(|index| {
        let header = unit.line_program.as_ref()?.header();
        file_path(unit, header, index)
    });
    Location {
        file,
        line: number(constants::DW_AT_call_line)
            .map(|line| line as u32)
            .filter(|&line| line != 0),
        column: number(constants::DW_AT_call_column)
            .map(|column| column as u32)
            .filter(|&column| column != 0),
    }
}

/// A function's name: its linkage name demangled, else its plain name,
/// else the name of the entry it is an instance or definition of.
fn function_name<'data>(
    unit: UnitRef<'_, Reader<'data>>,
    entry: &gimli::DebuggingInformationEntry<'_, '_, Reader<'data>>,
    hops: usize,
) -> Option<String> {
    for attribute in [
        constants::DW_AT_linkage_name,
        constants::DW_AT_MIPS_linkage_name,
    ] {
        if let Ok(Some(value)) = entry.attr_value(attribute) {
            if let Some(name) = text(unit, value) {
                return Some(demangle(&name));
            }
        }
    }
    if let Ok(Some(value)) = entry.attr_value(constants::DW_AT_name) {
        if let Some(name) = text(unit, value) {
            return Some(name);
        }
    }
    if hops == 0 {
        return None;
    }
    for attribute in [
        constants::DW_AT_abstract_origin,
        constants::DW_AT_specification,
    ] {
        let Ok(Some(value)) = entry.attr_value(attribute) else {
            continue;
        };
        match value {
            AttributeValue::UnitRef(offset) => {
                let origin = unit.entry(offset).ok()?;
                return function_name(unit, &origin, hops - 1);
            }
            AttributeValue::DebugInfoRef(offset) => {
                return name_in_other_unit(unit.dwarf, offset, hops - 1);
            }
            _ => {}
        }
    }
    None
}

/// The name of the entry at `offset` of `.debug_info`, in whichever unit
/// holds it.
fn name_in_other_unit(
    dwarf: &gimli::Dwarf<Reader<'_>>,
    offset: gimli::DebugInfoOffset,
    hops: usize,
) -> Option<String> {
    let mut headers = dwarf.units();
    while let Ok(Some(header)) = headers.next() {
        let Some(within) = offset.to_unit_offset(&header) else {
            continue;
        };
        let unit = dwarf.unit(header).ok()?;
        let unit = UnitRef::new(dwarf, &unit);
        let entry = unit.entry(within).ok()?;
        return function_name(unit, &entry, hops);
    }
    None
}

/// A symbol's name as people read it: a Rust name demangled without its
/// hash, anything else as it is.
fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// Names the probes that the debug info left without a function, or with
/// only a plain name for the function the code was compiled as (line tables
/// only), from the object's symbol table (or its dynamic one): the function
/// symbol whose extent holds the address.
fn symbol_table(file: &object::File<'_>, probes: &[Probe], answers: &mut [Answer]) {
    let unnamed: Vec<usize> = (0..probes.len())
        .filter(|&index| {
            answers[index].functions.first().is_none_or(|function| {
                function
                    .name
                    .as_deref()
                    .is_none_or(|name| !name.contains("::"))
            })
        })
        .collect();
    if unnamed.is_empty() {
        return;
    }
    // The nearest symbol start at or below each address, among those whose
    // extent holds it.
    let mut best: Vec<Option<(u64, object::SymbolIndex)>> = vec![None; probes.len()];
    if !nearest_symbols(file.symbols(), probes, &unnamed, &mut best) {
        nearest_symbols(file.dynamic_symbols(), probes, &unnamed, &mut best);
    }
    for (index, best) in best.into_iter().enumerate() {
        let Some((_, symbol)) = best else {
            continue;
        };
        if let Some(name) = file
            .symbol_by_index(symbol)
            .ok()
            .and_then(|symbol| symbol.name().ok().map(demangle))
        {
            answers[index].symbol = Some(name);
        }
    }
}

/// Finds, for each probe of `unnamed`, the function symbol of `symbols`
/// nearest below it whose extent holds it; whether there were any symbols.
fn nearest_symbols<'data>(
    symbols: impl Iterator<Item = impl ObjectSymbol<'data>>,
    probes: &[Probe],
    unnamed: &[usize],
    best: &mut [Option<(u64, object::SymbolIndex)>],
) -> bool {
    let mut any = false;
    let mut covered = Vec::new();
    for symbol in symbols {
        any = true;
        if symbol.kind() != SymbolKind::Text || symbol.size() == 0 {
            continue;
        }
        let start = symbol.address();
        covered.clear();
        probes_in(
            probes,
            unnamed,
            start,
            start.saturating_add(symbol.size()),
            &mut covered,
        );
        for &index in &covered {
            if best[index].is_none_or(|(known, _)| known < start) {
                best[index] = Some((start, symbol.index()));
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line `here` is declared on.
    const HERE_LINE: u32 = line!() + 2;
    #[inline(never)]
    fn here() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn an_address_in_this_file_names_this_file() {
        // As a return address: the probe is the byte before, the function's
        // first instruction after its first byte.
        let address = here as *const () as usize + 2;
        assert_eq!(here(), 7);
        let answers = resolve(&[address]);
        let symbols = &answers[0];
        assert!(!symbols.is_empty());
        let innermost = &symbols[0];
        assert!(
            innermost
                .file
                .as_ref()
                .is_some_and(|file| file.ends_with("src/symbolizer.rs")),
            "{symbols:?}"
        );
        assert!(
            innermost
                .name
                .as_deref()
                .is_some_and(|name| name.ends_with("here")),
            "{symbols:?}"
        );
        assert_eq!(innermost.line, Some(HERE_LINE), "{symbols:?}");
    }

    #[test]
    fn an_address_outside_every_object_has_no_symbols() {
        assert_eq!(resolve(&[16]), vec![Vec::<BacktraceSymbol>::new()]);
    }
}
