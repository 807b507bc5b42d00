/**
 * @peculiar/x509 resolves its services through tsyringe, which refuses to load without the
 * Reflect metadata API. Import this module before '@peculiar/x509'.
 */
import 'reflect-metadata';
