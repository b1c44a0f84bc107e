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

#endif /* SP_CODEC_INT_H */
