import Gateway
// STUB until the Sandbox module lands.
final class SandboxMode {
    static let demoToken = "veil-demo-token"
    let apiKey = "sandbox"
    var baseURL = ""
    func start() throws {}
    func stop() {}
    static func configText(userConfig: String) -> String { userConfig }
}
