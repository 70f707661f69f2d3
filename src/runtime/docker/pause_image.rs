//! The image network holders run: one program that waits forever.
//!
//! Nothing is pulled (there may be no registry), so Icarus makes the image
//! itself, with the engine's import API, from a program it carries: an ELF
//! file of 129 bytes whose code is the `pause` system call in a loop, which
//! is all Kubernetes' pause container does. The program is machine code,
//! so it exists for x86-64 engines only; elsewhere there is no image, and
//! agents join their network themselves (see `holders`).

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::runtime::{Result, RuntimeError};

/// The image's repository; its tag is the program's hash, so a changed
/// program is a new image and an engine's copy is never stale.
const REPOSITORY: &str = "icarus-network-holder";

/// Where the program is in the image.
pub(super) const PROGRAM_PATH: &str = "/pause";

/// `loop: mov eax, 34 (pause); syscall; jmp loop`.
const PAUSE_LOOP_X86_64: [u8; 9] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];

/// ELF's machine number for x86-64.
const MACHINE_X86_64: u16 = 0x3e;

/// Makes the network holders' image unless the engine has it, and returns
/// its name; `None` when the engine's architecture has no program here.
pub async fn ensure(docker: &Docker) -> Result<Option<String>> {
    let info = docker
        .info()
        .await
        .map_err(|e| RuntimeError::failed("read the engine's architecture", e))?;
    if info.architecture.as_deref() != Some("x86_64") {
        return Ok(None);
    }
    let program = elf_executable(MACHINE_X86_64, &PAUSE_LOOP_X86_64);
    let tag = hex_prefix(&Sha256::digest(&program), 12);
    let image = format!("{REPOSITORY}:{tag}");
    if docker.inspect_image(&image).await.is_ok() {
        return Ok(Some(image));
    }
    let options = CreateImageOptions {
        from_src: Some("-".to_owned()),
        repo: Some(REPOSITORY.to_owned()),
        tag: Some(tag),
        ..Default::default()
    };
    let archive = tar_of_one_file(PROGRAM_PATH.trim_start_matches('/'), &program);
    let mut import = docker.create_image(
        Some(options),
        Some(bollard::body_full(archive.into())),
        None,
    );
    while let Some(progress) = import.next().await {
        progress.map_err(|e| RuntimeError::failed("import the network holder's image", e))?;
    }
    tracing::info!(%image, "made the network holders' image");
    Ok(Some(image))
}

fn hex_prefix(bytes: &[u8], chars: usize) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(chars)
        .collect()
}

/// A static executable of one segment, `code`, loaded at 4 MiB and entered
/// at its first byte: a 64-byte file header, one 56-byte program header,
/// then the code.
fn elf_executable(machine: u16, code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let total = HEADERS + code.len() as u64;
    let mut file = Vec::with_capacity(total as usize);
    // Identification: magic, 64-bit, little-endian, version 1, System V ABI.
    file.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
    file.extend_from_slice(&[0; 8]);
    file.extend_from_slice(&2u16.to_le_bytes()); // an executable
    file.extend_from_slice(&machine.to_le_bytes());
    file.extend_from_slice(&1u32.to_le_bytes()); // version
    file.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry
    file.extend_from_slice(&64u64.to_le_bytes()); // program headers' offset
    file.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    file.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 0, 0, 0] {
        // This header's size, a program header's size and count, and no sections.
        file.extend_from_slice(&half.to_le_bytes());
    }
    // The one program header: load the whole file, readable and executable.
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, total, total, 0x1000] {
        // Offset, virtual and physical address, size in the file and in memory, alignment.
        file.extend_from_slice(&word.to_le_bytes());
    }
    file.extend_from_slice(code);
    file
}

/// A tar archive holding `contents` as the executable `name`, root's.
fn tar_of_one_file(name: &str, contents: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let mut field =
        |at: usize, text: &str| header[at..at + text.len()].copy_from_slice(text.as_bytes());
    field(100, "0000755\0"); // mode
    field(108, "0000000\0"); // owner
    field(116, "0000000\0"); // group
    field(124, &format!("{:011o}\0", contents.len()));
    field(136, "00000000000\0"); // modified
    field(148, "        "); // the checksum, as spaces while it is summed
    field(156, "0"); // a regular file
    field(257, "ustar\x0000"); // magic, then version "00"
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut archive = header.to_vec();
    archive.extend_from_slice(contents);
    archive.resize(archive.len().next_multiple_of(512), 0);
    // The end: two empty blocks.
    archive.resize(archive.len() + 1024, 0);
    archive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_a_129_byte_elf_entered_right_after_its_headers() {
        let program = elf_executable(MACHINE_X86_64, &PAUSE_LOOP_X86_64);
        assert_eq!(program.len(), 129);
        assert_eq!(&program[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([program[18], program[19]]), 0x3e);
        let entry = u64::from_le_bytes(program[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        assert_eq!(&program[120..], &PAUSE_LOOP_X86_64);
        let file_size = u64::from_le_bytes(program[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(file_size, 129);
    }

    #[test]
    fn the_archive_has_one_executable_file_and_a_valid_checksum() {
        let archive = tar_of_one_file("pause", b"abc");
        assert_eq!(archive.len(), 512 + 512 + 1024);
        assert_eq!(&archive[..5], b"pause");
        assert_eq!(&archive[100..107], b"0000755");
        assert_eq!(&archive[124..135], b"00000000003");
        assert_eq!(&archive[512..515], b"abc");
        let mut summed = archive[..512].to_vec();
        summed[148..156].copy_from_slice(b"        ");
        let sum: u32 = summed.iter().map(|b| u32::from(*b)).sum();
        let written = std::str::from_utf8(&archive[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(written, 8).unwrap(), sum);
    }

    /// The program really waits: run here, it is still running a moment
    /// later (and is then killed).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_program_waits_until_it_is_killed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, elf_executable(MACHINE_X86_64, &PAUSE_LOOP_X86_64)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none(), "it ended by itself");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
