import Foundation
import Glibc
import Testing

/// Scheduled jobs (`schedule:` / `every:`) and `whisperctl run`, through the real whisperd.
@Suite struct ScheduledJobTests {
    func ctl(_ scratch: Scratch, _ arguments: [String]) throws -> CommandResult {
        try runCommand(whisperctlBinary(), ["--socket", scratch.path + "/run/control.sock"] + arguments)
    }

    func status(_ scratch: Scratch, _ name: String) throws -> [String: Any] {
        let result = try ctl(scratch, ["status", "--json", name])
        let list = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]
        return try #require(list?.first, "status --json \(name): \(result.stdout) \(result.stderr)")
    }

    @Test func every_runsByTheClock_andARunStillGoingIsSkippedNotDoubled() throws {
        let scratch = Scratch()
        scratch.write(
            "roster.yaml",
            fastDefaults + """
                jobs:
                  tick:
                    command: [sh, -c, 'echo run >> $STATE_DIRECTORY/ticks.txt; sleep 1.5']
                    every: 1s
                characters:
                  elena: {command: [sleep, '300']}
                """)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        // Not at start: a scheduled job waits for its time.
        #expect(whisperd.waitFor("elena: stopped -> starting") != nil)
        #expect(whisperd.count("tick: stopped -> starting") == 0)
        #expect(whisperd.waitFor("tick: exited -> stopped", "scheduled run") != nil)
        // Due again a second later while the first run sleeps 1.5 s: skipped, and said so.
        #expect(whisperd.waitFor("scheduled run of tick skipped: its last run is still going") != nil)
        #expect(whisperd.waitFor("tick: exited -> stopped", "scheduled run", occurrence: 2) != nil)
        let tick = try status(scratch, "tick")
        let schedule = try #require(tick["schedule"] as? [String: Any])
        #expect(schedule["rule"] as? String == "every 1s")
        #expect((schedule["skipped_runs"] as? Int ?? 0) >= 1)
        #expect(schedule["next_run"] is String && schedule["last_run"] is String)
        let table = try ctl(scratch, ["status"])
        #expect(table.stdout.contains("scheduled jobs:") && table.stdout.contains("every 1s"), "\(table.stdout)")
        let metrics = httpGet(port: whisperd.httpPort, path: "/metrics")?.1 ?? ""
        #expect(metrics.contains("whisperd_job_next_run_timestamp_seconds{character=\"tick\"}"), "\(metrics.suffix(2000))")
        #expect(metrics.contains("whisperd_job_skipped_runs_total{character=\"tick\"}"))
        // Two runs never overlapped: each "run" line was written by a run that began after the last ended.
        let runs = (scratch.read("state/tick/ticks.txt") ?? "").split(separator: "\n").count
        #expect(runs >= 2 && runs <= whisperd.count("tick: stopped -> starting"))
        // A scheduled run is a new run, not a restart.
        #expect(tick["restarts"] as? Int == 0)
        #expect(whisperd.count("tick: stopped -> starting: spawning (restart") == 0)
    }

    @Test func cronInAZone_plansOnThatZonesWallClock_andStatusShowsIt() throws {
        let scratch = Scratch()
        scratch.write(
            "roster.yaml",
            fastDefaults + """
                jobs:
                  tokyo: {command: [/bin/true], schedule: "0 4 * * *", timezone: Asia/Tokyo}
                characters:
                  elena: {command: [sleep, '300']}
                """)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        #expect(whisperd.waitFor("elena: stopped -> starting") != nil)
        let schedule = try #require(try status(scratch, "tokyo")["schedule"] as? [String: Any])
        #expect(schedule["rule"] as? String == "0 4 * * * (Asia/Tokyo)")
        // 04:00 in Tokyo (UTC+9, no daylight saving) is 19:00 UTC.
        #expect((schedule["next_run"] as? String)?.contains("T19:00:00") == true, "\(schedule)")
        let next = try #require(schedule["next_run_unix"] as? Int)
        let now = Int(Date().timeIntervalSince1970)
        #expect(next > now && next <= now + 86_400)
    }

    @Test func catchUp_runsAMissedRunOnceAtStart_andOnlyWhenAskedTo() throws {
        let scratch = Scratch()
        scratch.write(
            "roster.yaml",
            fastDefaults + """
                jobs:
                  caught: {command: [sh, -c, 'echo run >> $STATE_DIRECTORY/runs.txt'], every: 1h, catch_up: true}
                  plain: {command: [sh, -c, 'echo run >> $STATE_DIRECTORY/runs.txt'], every: 1h}
                characters:
                  elena: {command: [sleep, '300']}
                """)
        // Both last ran (by the schedule) two hours ago; whisperd was down since.
        mkdir(scratch.path + "/state", 0o700)
        let twoHoursAgo = Int(Date().timeIntervalSince1970) - 7200
        scratch.write("state/schedules.json", "{\"caught\": \"\(twoHoursAgo)\", \"plain\": \"\(twoHoursAgo)\"}")
        chmod(scratch.path + "/state/schedules.json", 0o600)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        #expect(whisperd.waitFor("caught", "a scheduled run was missed while whisperd was down") != nil)
        #expect(whisperd.waitFor("caught: running -> exited") != nil)
        #expect(scratch.read("state/caught/runs.txt") == "run\n")
        #expect(whisperd.count("plain: stopped -> starting") == 0)
        #expect(scratch.read("state/plain/runs.txt") == nil)
        // The catch-up counts as the last run: a restart of whisperd does not run it again.
        whisperd.terminate()
        let stored = try JSONSerialization.jsonObject(with: Data((scratch.read("state/schedules.json") ?? "").utf8)) as? [String: String]
        #expect(stored?["plain"] == String(twoHoursAgo))
        #expect(stored?["caught"].flatMap { Int($0) }.map { $0 > twoHoursAgo } == true, "\(String(describing: stored))")
        let again = try WhisperdProcess(scratch: scratch)
        defer { again.terminate() }
        #expect(again.waitFor("elena: stopped -> starting") != nil)
        #expect(again.count("a scheduled run was missed") == 0)
    }

    @Test func aBackupJob_archivesTheFleetAsRoot_andAsATenantCannot() throws {
        let scratch = Scratch()
        scratch.write("characters/elena/character.md", "# Elena\n")
        scratch.write(
            "roster.yaml",
            fastDefaults + """
                characters_dir: characters
                jobs:
                  nightly-backup:
                    command: [whisperd, backup, --all, --to, \(scratch.path)/backups]
                    schedule: "30 3 * * *"
                    user: root
                    sandbox: {filesystem: off}
                  tenant-backup:
                    command: [sh, -c, 'exec whisperd backup --all --to "$STATE_DIRECTORY/backups"']
                    every: 1h
                characters:
                  elena: {command: [sh, -c, 'echo hello > $STATE_DIRECTORY/notes.txt; exec sleep 300']}
                  aria: {command: [sleep, '300']}
                """)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        #expect(whisperd.waitFor("elena: starting -> running") != nil)
        let run = try ctl(scratch, ["run", "nightly-backup"])
        #expect(run.code == 0, "\(run.stdout) \(run.stderr)")
        let archives = (try? FileManager.default.contentsOfDirectory(atPath: scratch.path + "/backups")) ?? []
        #expect(archives.count == 1 && archives[0].hasSuffix(".tar"), "\(archives)")
        if let archive = archives.first {
            let verified = try runCommand(whisperdBinary(), ["restore", "--verify-only", scratch.path + "/backups/" + archive])
            #expect(verified.code == 0 && verified.stdout.contains("characters: elena aria"), "\(verified.stdout) \(verified.stderr)")
        }
        // The same job as a tenant (its own uid, Landlock) cannot read the fleet's state: it fails.
        let tenant = try ctl(scratch, ["run", "tenant-backup"])
        #expect(tenant.code != 0, "\(tenant.stdout)")
        #expect(scratch.read("logs/tenant-backup.log")?.contains("Permission denied") == true, "\(scratch.read("logs/tenant-backup.log") ?? "")")
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: scratch.path + "/state/tenant-backup/backups")) ?? []).isEmpty)
    }

    @Test func run_runsAJobNow_waitsForItsResult_andRefusesWhatItCannotRun() throws {
        let scratch = Scratch()
        scratch.write(
            "roster.yaml",
            fastDefaults + """
                jobs:
                  migrate: {command: [sh, -c, 'echo run >> $STATE_DIRECTORY/runs.txt']}
                  broken: {command: [sh, -c, 'exit 3'], every: 1h, restart: no}
                  slow: {command: [sleep, '300'], every: 1h}
                characters:
                  elena: {command: [sleep, '300']}
                """)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        #expect(whisperd.waitFor("migrate: running -> exited") != nil)
        let run = try ctl(scratch, ["run", "migrate"])
        #expect(run.code == 0, "\(run.stdout) \(run.stderr)")
        #expect(run.stdout.contains("migrate: done"))
        #expect(scratch.read("state/migrate/runs.txt") == "run\nrun\n")

        let failed = try ctl(scratch, ["run", "broken"])
        #expect(failed.code != 0 && failed.stderr.contains("broken failed"), "\(failed.stdout) \(failed.stderr)")
        #expect(failed.stderr.contains("3"))

        let started = try ctl(scratch, ["run", "--no-wait", "slow"])
        #expect(started.code == 0, "\(started.stderr)")
        let twice = try ctl(scratch, ["run", "slow"])
        #expect(twice.code != 0 && twice.stderr.contains("slow is already running"), "\(twice.stderr)")
        let character = try ctl(scratch, ["run", "elena"])
        #expect(character.code != 0 && character.stderr.contains("elena is a character, not a job"), "\(character.stderr)")
        let unknown = try ctl(scratch, ["run", "nosuch"])
        #expect(unknown.code != 0 && unknown.stderr.contains("no character named nosuch"), "\(unknown.stderr)")
    }
}
