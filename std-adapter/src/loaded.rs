//! The objects loaded in this process (the executable and its shared
//! libraries), from the dynamic linker's own list: where their code lies,
//! what file each is, and its build ID, for symbol lookup and for the
//! mappings a profile names.

use std::ffi::CStr;
use std::path::PathBuf;

/// A loaded object (the executable or a shared library) and where its code
/// lies in this process.
// Without the `backtrace` feature, nothing looks symbols up: only the
// segments and build IDs are read (for profiles' mappings).
#[cfg_attr(not(feature = "backtrace"), allow(dead_code))]
pub(crate) struct LoadedObject {
    /// The file to read: `/proc/self/exe` for the executable, which names
    /// the file the process runs even if it was replaced on disk since.
    pub(crate) path: PathBuf,
    /// What the object's addresses are moved by in this process.
    pub(crate) bias: usize,
    /// Its executable segments, as addresses of this process.
    pub(crate) segments: Vec<(usize, usize)>,
    /// Its GNU build ID, from the note the linker wrote, as loaded.
    pub(crate) build_id: Option<Vec<u8>>,
}

#[cfg_attr(not(feature = "backtrace"), allow(dead_code))]
impl LoadedObject {
    pub(crate) fn contains(&self, address: usize) -> bool {
        self.segments
            .iter()
            .any(|&(start, end)| (start..end).contains(&address))
    }
}

/// The objects loaded in this process, from the dynamic linker's list.
pub(crate) fn loaded_objects() -> Vec<LoadedObject> {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the dynamic linker passes a valid `info` for the duration
        // of the call, and `data` is the vector `loaded_objects` passed.
        let (info, objects) = unsafe { (&*info, &mut *data.cast::<Vec<LoadedObject>>()) };
        let name = if info.dlpi_name.is_null() {
            &[][..]
        } else {
            // SAFETY: a non-null name is a NUL-terminated string the linker
            // keeps for as long as the object is loaded.
            unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
        };
        // The executable comes first and has no name of its own.
        let path = if objects.is_empty() && name.is_empty() {
            PathBuf::from("/proc/self/exe")
        } else if name.is_empty() {
            return 0;
        } else {
            PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name))
        };
        let headers = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: the linker's program headers of the object, `dlpi_phnum`
            // of them, valid during the call.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let bias = info.dlpi_addr as usize;
        let segments = headers
            .iter()
            .filter(|header| header.p_type == libc::PT_LOAD && header.p_flags & libc::PF_X != 0)
            .map(|header| {
                let start = bias.wrapping_add(header.p_vaddr as usize);
                (start, start.wrapping_add(header.p_memsz as usize))
            })
            .collect();
        let build_id = headers
            .iter()
            .filter(|header| header.p_type == libc::PT_NOTE)
            .find_map(|header| {
                let start = bias.wrapping_add(header.p_vaddr as usize);
                // SAFETY: a note segment of a loaded object is mapped and
                // readable for as long as the object stays loaded, which
                // it does during the call; `p_memsz` bytes of it.
                let notes = unsafe {
                    std::slice::from_raw_parts(start as *const u8, header.p_memsz as usize)
                };
                gnu_build_id(notes).map(<[u8]>::to_vec)
            });
        objects.push(LoadedObject {
            path,
            bias,
            segments,
            build_id,
        });
        0
    }
    let mut objects: Vec<LoadedObject> = Vec::new();
    // SAFETY: `visit` matches the callback's signature and only reads what
    // it is given; `data` is a vector that outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(visit), (&mut objects as *mut Vec<LoadedObject>).cast());
    }
    objects
}

/// The descriptor of the GNU build ID note among `notes` (a note segment:
/// name size, descriptor size and type, each 4 bytes, then the name and the
/// descriptor, each padded to 4 bytes).
fn gnu_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |bytes: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let padded = |size: usize| size.checked_add(3).map(|size| size & !3);
    while notes.len() >= 12 {
        let name_size = word(notes, 0)? as usize;
        let descriptor_size = word(notes, 4)? as usize;
        let kind = word(notes, 8)?;
        let name_end = 12usize.checked_add(padded(name_size)?)?;
        let end = name_end.checked_add(padded(descriptor_size)?)?;
        let name = notes.get(12..12 + name_size)?;
        let descriptor = notes.get(name_end..name_end + descriptor_size)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(descriptor);
        }
        notes = notes.get(end..)?;
    }
    None
}

/// What a profile says of a file mapping `start..limit` of this process: the
/// loaded object whose code lies in it, where that code starts (a mapping
/// begins at a page boundary, below the code where the code does not start
/// on one), and the object's build ID, in hex.
pub(crate) struct MappedCode {
    /// The first address of the object's executable segment in the
    /// mapping, or the mapping's start if the segment starts before it.
    pub(crate) start: usize,
    pub(crate) build_id: Option<String>,
}

/// The code of a loaded object that lies in the mapping `start..limit`, if
/// one does.
pub(crate) fn code_in(objects: &[LoadedObject], start: usize, limit: usize) -> Option<MappedCode> {
    objects.iter().find_map(|object| {
        let &(low, _) = object
            .segments
            .iter()
            .find(|&&(low, high)| low < limit && start < high)?;
        Some(MappedCode {
            start: low.max(start),
            build_id: object
                .build_id
                .as_ref()
                .map(|id| id.iter().map(|byte| format!("{byte:02x}")).collect()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_comes_first_with_its_code_and_build_id() {
        let objects = loaded_objects();
        let executable = &objects[0];
        assert_eq!(executable.path, PathBuf::from("/proc/self/exe"));
        let here = gnu_build_id as *const () as usize;
        assert!(executable.contains(here));
        // The toolchain's linker writes one on this platform.
        let (segment, _) = *executable
            .segments
            .iter()
            .find(|&&(low, high)| (low..high).contains(&here))
            .unwrap();
        let page = segment & !4095;
        let code = code_in(&objects, page, page + 4096).expect("code");
        // The code's own first address, not the page's.
        assert_eq!(code.start, segment);
        // The toolchain's linker writes one on this platform.
        let id = code.build_id.expect("a build ID");
        assert!(id.len() >= 16 && id.bytes().all(|byte| byte.is_ascii_hexdigit()));
    }

    #[test]
    fn notes_are_read_by_their_sizes() {
        let mut notes = Vec::new();
        // Another note first (type 1, name "GNU", 6 bytes padded to 8).
        for word in [4u32, 6, 1] {
            notes.extend_from_slice(&word.to_ne_bytes());
        }
        notes.extend_from_slice(b"GNU\0abcdef\0\0");
        for word in [4u32, 3, 3] {
            notes.extend_from_slice(&word.to_ne_bytes());
        }
        notes.extend_from_slice(b"GNU\0xyz\0");
        assert_eq!(gnu_build_id(&notes), Some(&b"xyz"[..]));
        assert_eq!(gnu_build_id(&notes[..20]), None);
    }
}
