namespace SharpVisor.Core;

/// <summary>
/// A host or configuration failure with a short message that names what failed
/// (the image and offset, the ioctl and errno, the option). Front ends print the
/// message as one line and exit non-zero; they never show a stack trace for these.
/// </summary>
public class VmmException : Exception
{
    public VmmException(string message) : base(message) { }
    public VmmException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A guest image (kernel, initrd, firmware) that cannot be used as given.</summary>
public sealed class ImageFormatException(string message) : VmmException(message);

/// <summary>An option or combination of options the machine cannot be built from.</summary>
public sealed class ConfigurationException(string message) : VmmException(message);
