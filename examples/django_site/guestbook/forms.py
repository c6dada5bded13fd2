"""The guest book form."""

from __future__ import annotations

from django import forms


class SignForm(forms.Form):
    name = forms.CharField(max_length=100)
    message = forms.CharField(max_length=1000, required=False, widget=forms.Textarea)
