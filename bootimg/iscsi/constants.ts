// iSCSI (RFC 7143) wire constants: opcodes, flag bits, login stages, status codes and reject reasons.

/** Size of the Basic Header Segment (RFC 7143 section 11.2.1). */
export const BHS_LENGTH = 48;
/** Size of a header or data digest (CRC32C, RFC 7143 section 13.1). */
export const DIGEST_LENGTH = 4;
/** Largest DataSegmentLength the 24-bit field can carry (RFC 7143 section 11.2.1.5). */
export const MAX_DATA_SEGMENT_FIELD = 0xff_ffff;
/** Default MaxRecvDataSegmentLength (RFC 7143 section 13.12). */
export const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH = 8192;
/** The reserved tag (ITT/TTT) meaning "none" (RFC 7143 section 11.2.1.8). */
export const RESERVED_TAG = 0xffff_ffff;
/** Version-max / version-active used by RFC 3720 and RFC 7143 (section 11.12.4). */
export const ISCSI_VERSION = 0x00;

/** Opcodes (RFC 7143 section 11.2.1.2). Initiator opcodes are 0x00-0x1f, target opcodes 0x20-0x3f. */
export const enum Opcode {
  NopOut = 0x00,
  ScsiCommand = 0x01,
  TaskMgmtRequest = 0x02,
  LoginRequest = 0x03,
  TextRequest = 0x04,
  DataOut = 0x05,
  LogoutRequest = 0x06,
  Snack = 0x10,
  NopIn = 0x20,
  ScsiResponse = 0x21,
  TaskMgmtResponse = 0x22,
  LoginResponse = 0x23,
  TextResponse = 0x24,
  DataIn = 0x25,
  LogoutResponse = 0x26,
  R2T = 0x31,
  AsyncMessage = 0x32,
  Reject = 0x3f,
}

/** Every opcode parseBhs understands, with its name. */
export const OPCODE_NAMES: ReadonlyMap<number, string> = new Map([
  [0x00, 'NOP-Out'], [0x01, 'SCSI Command'], [0x02, 'Task Management Request'], [0x03, 'Login Request'],
  [0x04, 'Text Request'], [0x05, 'SCSI Data-Out'], [0x06, 'Logout Request'], [0x10, 'SNACK Request'],
  [0x20, 'NOP-In'], [0x21, 'SCSI Response'], [0x22, 'Task Management Response'], [0x23, 'Login Response'],
  [0x24, 'Text Response'], [0x25, 'SCSI Data-In'], [0x26, 'Logout Response'], [0x31, 'R2T'],
  [0x32, 'Asynchronous Message'], [0x3f, 'Reject'],
]);

/** Byte 0 bits (RFC 7143 section 11.2.1). */
export const BYTE0_RESERVED = 0x80;
export const BYTE0_IMMEDIATE = 0x40;
export const OPCODE_MASK = 0x3f;

/** Byte 1 bits shared by most PDUs: the Final bit (RFC 7143 section 11.2.1.2). */
export const FLAG_FINAL = 0x80;

/** SCSI Command byte 1 (RFC 7143 section 11.3). */
export const CMD_FLAG_READ = 0x40;
export const CMD_FLAG_WRITE = 0x20;
export const CMD_ATTR_MASK = 0x07;

/** SCSI Response byte 1 (RFC 7143 section 11.4): bidi overflow/underflow, overflow, underflow. */
export const RSP_FLAG_BIDI_OVERFLOW = 0x10;
export const RSP_FLAG_BIDI_UNDERFLOW = 0x08;
export const RSP_FLAG_OVERFLOW = 0x04;
export const RSP_FLAG_UNDERFLOW = 0x02;

/** SCSI Data-In byte 1 (RFC 7143 section 11.7): Acknowledge, Overflow, Underflow, Status. */
export const DATAIN_FLAG_ACK = 0x40;
export const DATAIN_FLAG_OVERFLOW = 0x04;
export const DATAIN_FLAG_UNDERFLOW = 0x02;
export const DATAIN_FLAG_STATUS = 0x01;

/** Login byte 1 (RFC 7143 section 11.12): Transit, Continue, CSG (bits 2-3), NSG (bits 0-1). */
export const LOGIN_FLAG_TRANSIT = 0x80;
export const LOGIN_FLAG_CONTINUE = 0x40;
export const LOGIN_CSG_MASK = 0x0c;
export const LOGIN_CSG_SHIFT = 2;
export const LOGIN_NSG_MASK = 0x03;

/** Text byte 1 (RFC 7143 section 11.10): Continue. */
export const TEXT_FLAG_CONTINUE = 0x40;

/** Login stages, the CSG and NSG values (RFC 7143 section 11.12.3); 2 is reserved. */
export const enum LoginStage {
  SecurityNegotiation = 0,
  LoginOperationalNegotiation = 1,
  FullFeaturePhase = 3,
}

/** Login Response Status-Class (RFC 7143 section 11.13.5). */
export const enum StatusClass {
  Success = 0x00,
  Redirection = 0x01,
  InitiatorError = 0x02,
  TargetError = 0x03,
}

/** Login Response status, Status-Class << 8 | Status-Detail (RFC 7143 section 11.13.5). */
export const enum LoginStatus {
  Success = 0x0000,
  TargetMovedTemporarily = 0x0101,
  TargetMovedPermanently = 0x0102,
  InitiatorError = 0x0200,
  AuthenticationFailure = 0x0201,
  AuthorizationFailure = 0x0202,
  NotFound = 0x0203,
  TargetRemoved = 0x0204,
  UnsupportedVersion = 0x0205,
  TooManyConnections = 0x0206,
  MissingParameter = 0x0207,
  CantIncludeInSession = 0x0208,
  SessionTypeNotSupported = 0x0209,
  SessionDoesNotExist = 0x020a,
  InvalidDuringLogin = 0x020b,
  TargetError = 0x0300,
  ServiceUnavailable = 0x0301,
  OutOfResources = 0x0302,
}

/** Reject reasons (RFC 7143 section 11.17.1). */
export const enum RejectReason {
  DataDigestError = 0x02,
  SnackReject = 0x03,
  ProtocolError = 0x04,
  CommandNotSupported = 0x05,
  ImmediateCommandReject = 0x06,
  TaskInProgress = 0x07,
  InvalidDataAck = 0x08,
  InvalidPduField = 0x09,
  LongOperationReject = 0x0a,
  DeprecatedReason = 0x0b,
  WaitingForLogout = 0x0c,
}

/** SCSI Response "Response" field (RFC 7143 section 11.4.3). */
export const enum ScsiResponseCode {
  CommandCompleted = 0x00,
  TargetFailure = 0x01,
}

/** SCSI status bytes (SAM), as carried in SCSI Response and Data-In (RFC 7143 section 11.4.2). */
export const enum ScsiStatus {
  Good = 0x00,
  CheckCondition = 0x02,
  Busy = 0x08,
  ReservationConflict = 0x18,
  TaskSetFull = 0x28,
  TaskAborted = 0x40,
}

/** Task management functions (RFC 7143 section 11.5.1). */
export const enum TaskMgmtFunction {
  AbortTask = 1,
  AbortTaskSet = 2,
  ClearAca = 3,
  ClearTaskSet = 4,
  LogicalUnitReset = 5,
  TargetWarmReset = 6,
  TargetColdReset = 7,
  TaskReassign = 8,
}

/** Task management responses (RFC 7143 section 11.6.1). */
export const enum TaskMgmtResponseCode {
  FunctionComplete = 0,
  TaskDoesNotExist = 1,
  LunDoesNotExist = 2,
  TaskStillAllegiant = 3,
  ReassignmentNotSupported = 4,
  FunctionNotSupported = 5,
  AuthorizationFailed = 6,
  FunctionRejected = 255,
}

/** Logout reason codes (RFC 7143 section 11.14.1). */
export const enum LogoutReason {
  CloseSession = 0,
  CloseConnection = 1,
  RemoveConnectionForRecovery = 2,
}

/** Logout responses (RFC 7143 section 11.15.1). */
export const enum LogoutResponseCode {
  ClosedSuccessfully = 0,
  CidNotFound = 1,
  RecoveryNotSupported = 2,
  CleanupFailed = 3,
}

/** Asynchronous events (RFC 7143 section 11.9.1). */
export const enum AsyncEvent {
  ScsiAsyncEvent = 0,
  LogoutRequested = 1,
  DroppingConnection = 2,
  DroppingAllConnections = 3,
  RequestParameterNegotiation = 4,
  VendorSpecific = 255,
}

/**
 * Most text of one negotiation sequence (a Login or Text Request continued with the C bit) a target takes; RFC 7143
 * section 6.1 asks that at least 8192 bytes be accepted. Bounds what one connection buffers before parsing.
 */
export const MAX_NEGOTIATION_TEXT_LENGTH = 65536;
/** Most Login Requests of one login: iPXE with mutual CHAP needs 4; more means a peer going round in circles. */
export const MAX_LOGIN_REQUESTS = 64;
