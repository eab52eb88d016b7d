import ArgumentParser
import Foundation
import WhisperAPI

/// `whisperctl dashboard`: the web dashboard's login URL (with its token, like Jupyter's).
/// Whoever may use the control socket may log in; the URL is a credential: do not share it.
extension Whisperctl {
    struct Dashboard: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the web dashboard's login URL (it holds the token: treat it as a password).")

        @OptionGroup var connection: Connection

        func run() throws {
            let response = try connection.client.get("/v1/dashboard")
            guard response.status == 200 else {
                throw OperationFailed(description: "no dashboard login (\(response.status)): \(response.errorMessage)")
            }
            let login = try response.decode(DashboardLogin.self)
            print(login.url)
            if let file = login.tokenFile {
                FileHandle.standardError.write(Data("(the token is also in \(file), readable by root and group whisperd)\n".utf8))
            }
        }
    }
}
