#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import ServiceLifecycle

/// A listening server that names its setting when it cannot listen: "METRICS_PORT: 127.0.0.1:9464 is in
/// use by another process", not a bare `bind(…): Address already in use (errno: 98)`.
struct Listener<Server: Service>: Service {
    let setting: String
    let address: String
    let server: Server

    func run() async throws {
        do {
            try await server.run()
        } catch let error as IOError {
            throw ListenerFailure(setting: setting, address: address, error: error)
        }
    }
}

/// Why a listener could not start, in a sentence that names the setting to change.
public struct ListenerFailure: Error, CustomStringConvertible {
    public let setting: String
    public let address: String
    let error: IOError

    /// Why a service group stopped: a failed bind that no wrapper named is the server's own listener's, PORT's.
    public static func reason(stopping error: any Error, port: String?) -> String {
        if let error = error as? IOError, error.description.hasPrefix("bind("), let port {
            return ListenerFailure(setting: "PORT", address: port, error: error).description
        }
        return String(describing: error)
    }

    public var description: String {
        switch error.errnoCode {
        case EADDRINUSE: "\(setting): \(address) is in use by another process; stop it or choose another port"
        case EACCES: "\(setting): this user may not listen on \(address); choose a port above 1023"
        // The port is not at fault: the host it is asked on is.
        case EADDRNOTAVAIL: "HOST: \(address) (where \(setting) is served) is not an address of this machine; choose one it has, such as 127.0.0.1 or 0.0.0.0"
        default: "\(setting): cannot listen on \(address): \(error)"
        }
    }
}
