import Glibc
import WhisperSystem

/// Replaces one file of a character folder atomically: a temporary file in the same folder,
/// given the old file's owner and mode (a new file: the folder's owner, mode 0644), written,
/// fsynced, renamed over the old one, then the folder fsynced. A reader (the worker starting)
/// sees the old file or the new one, never a part. Symlinks are neither followed nor replaced.
enum CharacterFileWriter {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func replace(directory: String, file: String, contents: [UInt8]) throws {
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        guard directoryFD >= 0 else { throw Failure(description: "cannot open \(directory): \(SystemError("open"))") }
        defer { close(directoryFD) }
        var directoryStat = stat()
        guard fstat(directoryFD, &directoryStat) == 0 else { throw Failure(description: "cannot stat \(directory)") }
        var owner = (uid: directoryStat.st_uid, gid: directoryStat.st_gid)
        var mode: mode_t = 0o644
        var existing = stat()
        if fstatat(directoryFD, file, &existing, AT_SYMLINK_NOFOLLOW) == 0 {
            guard existing.st_mode & S_IFMT == S_IFREG else {
                throw Failure(description: "\(directory)/\(file) is not a regular file (a symlink is not replaced)")
            }
            owner = (existing.st_uid, existing.st_gid)
            mode = existing.st_mode & 0o7777
        } else if errno != ENOENT {
            throw Failure(description: "cannot stat \(directory)/\(file): \(SystemError("fstatat"))")
        }

        let temporary = ".\(file).whisperd-\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
        let fd = openat(directoryFD, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "cannot create a file in \(directory): \(SystemError("openat"))") }
        var renamed = false
        defer {
            close(fd)
            if !renamed { unlinkat(directoryFD, temporary, 0) }
        }
        var written = 0
        while written < contents.count {
            let count = contents.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw Failure(description: "cannot write \(directory)/\(file): \(SystemError("write"))") }
            written += count
        }
        // Owner first: chown clears setuid/setgid bits, the mode then sets exactly the old one.
        if fchown(fd, owner.uid, owner.gid) != 0, geteuid() == 0 {
            throw Failure(description: "cannot give \(directory)/\(file) to uid \(owner.uid): \(SystemError("fchown"))")
        }
        guard fchmod(fd, mode) == 0 else { throw Failure(description: "cannot set the mode of \(directory)/\(file)") }
        guard fsync(fd) == 0 else { throw Failure(description: "cannot fsync \(directory)/\(file): \(SystemError("fsync"))") }
        guard renameat(directoryFD, temporary, directoryFD, file) == 0 else {
            throw Failure(description: "cannot replace \(directory)/\(file): \(SystemError("renameat"))")
        }
        renamed = true
        _ = fsync(directoryFD)
    }
}
