/*
 * sp_codec_int.h: codec entry points the sessions use.
 */
#ifndef SP_CODEC_INT_H
#define SP_CODEC_INT_H

#include "sync_protocol/codec.h"
#include "sp_buf.h"

/*
 * Append one frame for `msg` to `buf`.  Returns 0, SP_ERR_INVALID_ARGUMENT
 * (msg not encodable), SP_ERR_FRAME_TOO_LARGE (body over `max_frame`) or
 * SP_ERR_NOMEM; on error `buf` is as before.
 */
int sp_codec_append_frame(sp_buf *buf, const sp_msg *msg, size_t max_frame);

/*
 * Bytes the frame begun in `r` still needs to be whole (0 at a frame
 * boundary; the rest of the length prefix while that is incomplete).
 */
size_t sp_frame_reader_need(const sp_frame_reader *r);

/* The frame last handed out is no longer needed: free a large buffer
 * now rather than at the next read, which may never come. */
void sp_frame_reader_trim(sp_frame_reader *r);

/* Change the largest body accepted, from the next length prefix on
 * (0 means SP_MAX_FRAME_DEFAULT). */
void sp_frame_reader_set_max(sp_frame_reader *r, size_t max_frame);

#endif /* SP_CODEC_INT_H */
