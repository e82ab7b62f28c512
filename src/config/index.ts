export * from './schema';
export { ConfigError, type ConfigIssue, parseConfig, loadConfig, configToJSON, formatPath } from './load';
export { POLICY_KEYS, resolveConfig, normalizeDir, resolvePolicy, bridgeDomain } from './checks';
export { findJsonSyntaxError } from './json';
export { SocketDirError, SocketGroupError, prepareSocketDir, readGroups, resolveGroup, socketDirListenError } from './socket-dir';
export { type ConfigDiff, type SettingChange, LIVE_SETTINGS, RESTART_SETTINGS, diffConfig } from './diff';
