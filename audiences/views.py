"""Public pages a contact reaches from a link: the email double opt-in confirmation."""

from django.core import signing
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from . import services
from .models import Contact


@require_GET
def confirm_email(request, token: str):
    try:
        contact = services.email_confirm(token)
    except signing.SignatureExpired:
        return HttpResponse("This confirmation link has expired. Please sign up again.", status=410)
    except (signing.BadSignature, Contact.DoesNotExist):
        return HttpResponse("This confirmation link is not valid.", status=404)
    return HttpResponse(f"Thank you: {contact.email} is confirmed.", content_type="text/plain")
