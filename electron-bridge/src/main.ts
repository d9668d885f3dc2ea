/**
 * Main-process entry: the client, the IPC relay and the command resolver.
 *
 *   import { SidecarClient, registerTaskIpc } from '@task-sidecar/electron-bridge/main';
 */
export { SidecarClient, stderrLevel } from './client';
export type {
  CallOptions,
  ClientEventName,
  ClientEvents,
  ClientState,
  ExitInfo,
  LogEntry,
  Logger,
  LogLevel,
  RestartPolicy,
  SidecarClientOptions,
} from './client';
export { SidecarError, isSidecarErrorLike, type SidecarErrorShape } from './errors';
export { LineDecoder, encodeMessage } from './framing';
export { RpcConnection } from './connection';
export { registerTaskIpc } from './relay';
export type {
  IpcMainInvokeEventLike,
  IpcMainLike,
  RegisterTaskIpcOptions,
  RelayClient,
  SenderFrameLike,
  TaskIpcRegistration,
  WebContentsLike,
  WindowLike,
} from './relay';
export { resolveSidecarCommand, frozenSidecarName, isPackagedElectron } from './resolve';
export type { ResolveSidecarOptions, SidecarCommand } from './resolve';
export { validateParams } from './validate';
export { checkAgainstOpenRpc, type OpenRpcMismatch, type OpenRpcCheckOptions } from './openrpc';
export * from './ipc-contract';
export * from './protocol';
