import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// Closes a connection whose client is slow to send its request, which
/// Hummingbird's idle timeout alone does not: that timeout counts parsed HTTP
/// parts only, so a body sent a byte every few seconds, or a head trickling in
/// while the connection is otherwise busy, would keep it open for good.
///
/// - A request head must be complete within `headTimeout` of its first byte.
/// - While a request body is read, every `readTimeout` must bring at least
///   `minimumRate` bytes a second of it: a body that stops, or trickles,
///   closes the connection.
///
/// Neither clock runs while the server itself stops reading (a handler that is
/// slow to take the body holds the socket back): that wait is ours, not the
/// client's. The guard sits after HTTP decoding, where it sees requests begin
/// and end, and puts a partner (`ByteWatch`) at the front of the pipeline,
/// where it sees raw bytes and the server's reads.
final class SlowClientGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let clock: ReadClock
    private let headTimeout: TimeAmount
    private let readTimeout: TimeAmount
    private let minimumBytesPerWindow: Int
    private var timer: Scheduled<Void>?

    init(headTimeout: Duration, readTimeout: Duration, minimumRate: Int) {
        self.headTimeout = TimeAmount(headTimeout)
        self.readTimeout = TimeAmount(readTimeout)
        minimumBytesPerWindow = max(1, Int(Double(minimumRate) * Double(self.readTimeout.nanoseconds) / 1e9))
        clock = ReadClock()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        clock.onFirstByte = { [unowned self] in self.arm(context, after: self.headTimeout) }
        try? context.pipeline.syncOperations.addHandler(ByteWatch(clock: clock), position: .first)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        clock.onFirstByte = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            clock.phase = .readingBody
            clock.startWindow()
            arm(context, after: readTimeout)
        case .body:
            break
        case .end:
            clock.phase = .responding
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data), clock.phase == .responding { clock.phase = .betweenRequests }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext, after delay: TimeAmount) {
        timer?.cancel()
        timer = context.eventLoop.scheduleTask(in: delay) { [weak self] in self?.check(context) }
    }

    /// Closes the connection if the client, asked for bytes, did not send
    /// enough of them in time.
    private func check(_ context: ChannelHandlerContext) {
        timer = nil
        let now = NIODeadline.now()
        switch clock.phase {
        case .readingHead(let started):
            if !clock.readPending {
                arm(context, after: headTimeout)
            } else if now - started >= headTimeout {
                context.close(promise: nil)
            } else {
                arm(context, after: headTimeout - (now - started))
            }
        case .readingBody:
            if !clock.readPending {
                // The server is not reading: this window says nothing of the client.
                clock.startWindow()
            } else if now - clock.windowStart >= readTimeout {
                guard clock.windowBytes >= minimumBytesPerWindow else {
                    context.close(promise: nil)
                    return
                }
                clock.startWindow()
            }
            arm(context, after: readTimeout - (now - clock.windowStart))
        case .betweenRequests, .responding:
            return
        }
    }
}

/// What the two halves of a `SlowClientGuard` share: both run on the
/// connection's event loop, so nothing here needs a lock.
final class ReadClock {
    enum Phase: Equatable {
        case betweenRequests
        case readingHead(since: NIODeadline)
        case readingBody
        case responding
    }

    var phase = Phase.betweenRequests
    /// Since when, and how many bytes of a body, the current window counts.
    var windowStart = NIODeadline.now()
    var windowBytes = 0
    /// Whether the server has asked for more bytes and not yet had them.
    var readPending = false
    var onFirstByte: (() -> Void)?

    func bytesArrived(_ count: Int) {
        switch phase {
        case .betweenRequests:
            phase = .readingHead(since: .now())
            onFirstByte?()
        case .readingBody:
            windowBytes += count
        case .readingHead, .responding:
            break
        }
    }

    func startWindow() {
        windowStart = .now()
        windowBytes = 0
    }
}

/// The raw half: bytes as they arrive, and the server's requests for more.
final class ByteWatch: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let clock: ReadClock

    init(clock: ReadClock) {
        self.clock = clock
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        clock.bytesArrived(unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        clock.readPending = false
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        clock.readPending = true
        context.read()
    }
}

extension FrontDoor {
    /// Hummingbird's HTTP/1.1 server with the idle timeout and the slow-client
    /// guard.
    public var http1Server: HTTPServerBuilder {
        let head = requestHeadTimeout
        let read = requestReadTimeout
        let rate = requestMinimumRate
        return .http1(
            configuration: .init(
                additionalChannelHandlers: [SlowClientGuard(headTimeout: head, readTimeout: read, minimumRate: rate)],
                idleTimeout: TimeAmount(idleTimeout)))
    }
}
