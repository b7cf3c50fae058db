/*
 * copytext.c - one field of COPY text, see copytext.h.
 */
#include "copytext.h"

#include <stdint.h>
#include <string.h>

size_t tg_utf8_seq_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0xC2)
        return 0; /* ASCII is not a sequence; a continuation byte or an overlong 2-byte lead */
    if (c < 0xE0) {
        n = 2;
        cp = c & 0x1Fu;
    } else if (c < 0xF0) {
        n = 3;
        cp = c & 0x0Fu;
    } else if (c < 0xF5) {
        n = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0u) != 0x80u)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

char *tg_copy_text_put(char *out, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c >= 0x80) {
            size_t k = tg_utf8_seq_len(p, (size_t)(end - p));
            if (k == 0) {
                *out++ = '?';
                p++;
            } else {
                memcpy(out, p, k);
                out += k;
                p += k;
            }
            continue;
        }
        switch (c) {
        case '\0':
            *out++ = '?';
            break;
        case '\\':
            *out++ = '\\';
            *out++ = '\\';
            break;
        case '\t':
            *out++ = '\\';
            *out++ = 't';
            break;
        case '\n':
            *out++ = '\\';
            *out++ = 'n';
            break;
        case '\r':
            *out++ = '\\';
            *out++ = 'r';
            break;
        default:
            *out++ = (char)c;
            break;
        }
        p++;
    }
    return out;
}
